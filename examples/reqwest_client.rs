//! A reqwest client over the whole stack: registry → health filter →
//! `ReqwestEndpoint` → a circuit breaker per endpoint → round-robin.
//!
//! ```text
//! cargo run --example reqwest_client --features reqwest
//! ```
//!
//! Starts three HTTP backends on 127.0.0.1, registers them with HTTP health
//! checks, sends 300 requests, then makes one backend answer 503 and sends
//! 300 more: its circuit opens after a few failures and its health check
//! turns critical, so the rest go to the other two. Prints the spread.
//! Exits 0 in about a second.

mod backends;

use std::time::Duration;

use bytes::Bytes;
use fluxor_registry::endpoint::ReqwestEndpoint;
use fluxor_registry::{
    CheckSpec, CircuitBreakerConfig, CircuitBreakerLayer, EndpointLayer, HealthChecker,
    HealthCheckerConfig, HealthConfig, HealthFilterLayer, LoadBalanceLayer, Query,
    ServiceDefinition, ServiceRegistry, Strategy,
};
use tower::{BoxError, ServiceBuilder, ServiceExt};

use backends::{Backend, spread};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let backends = [
        Backend::start("a").await?,
        Backend::start("b").await?,
        Backend::start("c").await?,
    ];
    let registry = ServiceRegistry::builder().build().await?;
    let checker = HealthChecker::new(registry.clone(), HealthCheckerConfig::default());
    for b in &backends {
        let instance = registry
            .register(ServiceDefinition::new("inventory", "127.0.0.1", b.port))
            .await?;
        checker.start_health_checks(
            &instance,
            HealthConfig {
                interval: Duration::from_millis(100),
                checks: vec![CheckSpec::http("/health").timeout(Duration::from_secs(1))],
                ..Default::default()
            },
        )?;
    }

    let breaker = CircuitBreakerConfig {
        failure_threshold: 3,
        ..Default::default()
    };
    // reqwest's client made a tower Service per instance, in the same
    // stack as any other tower client; an instance
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
                .endpoints(ReqwestEndpoint::new(reqwest::Client::new())),
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
            let request = http::Request::get("/api/inventory").body(Bytes::new())?;
            let response = (&mut client).oneshot(request).await?;
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
