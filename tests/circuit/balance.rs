//! Three real HTTP backends on 127.0.0.1 behind tower's own p2c balancer,
//! fed by the registry's discover stream, with a circuit breaker per
//! endpoint. One backend answers 500: its circuit opens, traffic moves to
//! the other two with no failed request after the threshold, and once it
//! recovers it is readmitted after the reset timeout.
//!
//! The sockets are real, so the test runs on the real clock (paused time
//! would auto-advance to the circuit's timer while a request waits on a
//! socket). The reset timeout is an hour, so it cannot pass by itself; the
//! test moves the clock past it with `pause(); advance(); resume()`, which
//! tokio's clock keeps as an offset. Nothing sleeps.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use fluxor_registry::{
    CircuitBreakerConfig, CircuitBreakerLayer, EndpointLayer, Event, Query, ServiceDefinition,
    ServiceInstance, ServiceRegistry,
};
use http_body_util::BodyExt;
use tower::balance::p2c::Balance;
use tower::load::{CompleteOnResponse, PendingRequests};
use tower::{BoxError, Service, ServiceBuilder, ServiceExt, layer::layer_fn, service_fn};

use crate::support::{HttpServer, http_client};

const RESET: Duration = Duration::from_secs(3600);
const THRESHOLD: u32 = 3;

/// Sends `n` requests through the balancer; counts (server, status).
async fn send<S>(balance: &mut S, n: usize) -> HashMap<(String, u16), usize>
where
    S: Service<&'static str, Response = http::Response<String>, Error = BoxError>,
{
    let mut seen = HashMap::new();
    for _ in 0..n {
        let response = balance.ready().await.unwrap().call("/").await.unwrap();
        let key = (response.body().clone(), response.status().as_u16());
        *seen.entry(key).or_default() += 1;
    }
    seen
}

fn failures(seen: &HashMap<(String, u16), usize>) -> usize {
    seen.iter()
        .filter(|((_, status), _)| *status >= 500)
        .map(|(_, n)| n)
        .sum()
}

fn served_by(seen: &HashMap<(String, u16), usize>, name: &str) -> usize {
    seen.iter()
        .filter(|((server, _), _)| server == name)
        .map(|(_, n)| n)
        .sum()
}

#[tokio::test]
async fn the_failing_backend_is_routed_around_and_readmitted_after_recovery() {
    let servers = [
        HttpServer::start("a").await,
        HttpServer::start("b").await,
        HttpServer::start("bad").await,
    ];
    servers[2].set_status(500);
    let registry = ServiceRegistry::builder().build().await.unwrap();
    let mut events = registry.subscribe();
    for s in &servers {
        registry
            .register(ServiceDefinition::new("web", "127.0.0.1", s.port()).tag(s.name.clone()))
            .await
            .unwrap();
    }

    let client = http_client();
    let endpoints =
        registry
            .discover(Query::name("web"))
            .endpoints(move |instance: &ServiceInstance| {
                let (client, base) = (client.clone(), instance.base_url());
                service_fn(move |path: &'static str| {
                    let (client, url) = (client.clone(), format!("{base}{path}"));
                    async move {
                        let response = client.get(url.parse()?).await?;
                        let (parts, body) = response.into_parts();
                        let body: Bytes = body.collect().await?.to_bytes();
                        Ok::<_, BoxError>(http::Response::from_parts(
                            parts,
                            String::from_utf8(body.to_vec())?,
                        ))
                    }
                })
            });
    let breaker = CircuitBreakerLayer::try_new(CircuitBreakerConfig {
        failure_threshold: THRESHOLD,
        reset_timeout: RESET,
        ..Default::default()
    })
    .unwrap()
    .http()
    .with_events(registry.events());
    let endpoints = ServiceBuilder::new()
        .layer(EndpointLayer::new(layer_fn(|s| {
            PendingRequests::new(s, CompleteOnResponse::default())
        })))
        .layer(EndpointLayer::new(breaker.clone()))
        .service(endpoints);
    let mut balance = Balance::new(endpoints);

    // Until the bad backend has failed THRESHOLD times, p2c still picks it.
    let mut seen = HashMap::new();
    while servers[2].hits() < THRESHOLD as usize {
        for (k, n) in send(&mut balance, 1).await {
            *seen.entry(k).or_default() += n;
        }
        assert!(
            seen.values().sum::<usize>() < 1000,
            "bad backend never picked"
        );
    }
    assert_eq!(failures(&seen), THRESHOLD as usize);
    let opened = loop {
        match events.recv().await.unwrap() {
            Event::CircuitOpen { key, retry_after } => break (key, retry_after),
            _ => continue,
        }
    };
    assert_eq!(opened.1, RESET);
    assert_eq!(breaker.ejected(), (1, 3), "one of three endpoints open");

    // Open: not one request reaches it, not one fails.
    let seen = send(&mut balance, 90).await;
    assert_eq!(failures(&seen), 0, "{seen:?}");
    assert_eq!(served_by(&seen, "bad"), 0, "{seen:?}");
    assert_eq!(servers[2].hits(), THRESHOLD as usize);
    assert!(
        served_by(&seen, "a") > 0 && served_by(&seen, "b") > 0,
        "{seen:?}"
    );
    assert_eq!(seen.values().sum::<usize>(), 90);

    // It recovers; once the reset timeout has passed its circuit's timer
    // wakes the balancer, a trial request closes the circuit, and it gets
    // its share again.
    servers[2].set_status(200);
    tokio::time::pause();
    tokio::time::advance(RESET).await;
    tokio::time::resume();
    let seen = send(&mut balance, 90).await;
    assert_eq!(failures(&seen), 0, "{seen:?}");
    assert!(served_by(&seen, "bad") > 0, "readmitted: {seen:?}");
    assert!(servers[2].hits() > THRESHOLD as usize);

    let mut after = vec![];
    while let Some(event) = events.try_recv().unwrap() {
        if event.key() == opened.0 {
            after.push(event.name());
        }
    }
    assert_eq!(
        after,
        ["circuit-breaker-half-open", "circuit-breaker-closed"]
    );
    assert_eq!(breaker.ejected(), (0, 3));
}
