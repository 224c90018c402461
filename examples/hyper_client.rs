//! A hyper client over the whole stack: registry → health filter →
//! `HttpEndpoint` → a circuit breaker per endpoint → round-robin.
//!
//! ```text
//! cargo run --example hyper_client --features hyper
//! ```
//!
//! Starts three HTTP backends on 127.0.0.1, registers them with HTTP health
//! checks, sends 300 requests, then makes one backend answer 503 and sends
//! 300 more: its circuit opens after a few failures and its health check
//! turns critical, so the rest go to the other two. Prints the spread.
//! Exits 0 in about a second.

mod backends;

use bytes::Bytes;
use fluxor_registry::endpoint::HttpEndpoint;
use fluxor_registry::{
    CircuitBreakerConfig, CircuitBreakerLayer, EndpointLayer, HealthFilterLayer, LoadBalanceLayer,
    Query, Strategy,
};
use http_body_util::Empty;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

use backends::{registered, spread};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // Three backends registered as "inventory", with HTTP health checks.
    let (backends, registry, checker) = registered("inventory").await?;

    let breaker = CircuitBreakerConfig {
        failure_threshold: 3,
        ..Default::default()
    };
    // The same stack a user composes for any tower client; an instance
    // joins the balancer once its first health check passes.
    let mut client = ServiceBuilder::new()
        .layer(LoadBalanceLayer::new(Strategy::RoundRobin))
        .layer(EndpointLayer::new(
            CircuitBreakerLayer::try_new(breaker)?.http(),
        ))
        .layer(HealthFilterLayer::new(checker.clone()))
        .service(
            registry
                .discover(Query::name("inventory"))
                .endpoints(HttpEndpoint::<Empty<Bytes>>::http()),
        );

    let mut errors = 0;
    let mut c_before = 0;
    for round in 0..2 {
        if round == 1 {
            println!("backend c now answers 503");
            backends[2].set_status(503);
            c_before = backends[2].hits();
        }
        for _ in 0..300 {
            let request = http::Request::get("/api/inventory").body(Empty::new())?;
            let response = client.ready().await?.call(request).await?;
            if !response.status().is_success() {
                errors += 1;
            }
        }
        println!(
            "after {} requests: {}",
            300 * (round + 1),
            spread(&backends)
        );
    }
    println!("non-2xx responses: {errors} (until c's circuit opened)");
    if backends[2].hits() - c_before > 10 {
        return Err("the failing backend kept getting traffic".into());
    }
    Ok(())
}
