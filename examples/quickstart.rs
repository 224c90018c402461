//! The main job: the whole stack on the embedded default, surviving a dead
//! backend.
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! Starts three HTTP backends on 127.0.0.1, registers them with HTTP health
//! checks, and sends 1,000 requests through the balanced tower stack
//! (registry discovery → health filter → per-instance circuit breakers →
//! round-robin), retrying a failed request once more. A third of the way
//! in, one backend is killed: its in-flight failures are retried elsewhere,
//! its circuit opens, its health check turns critical and it leaves the
//! rotation. Prints the spread, the events, the stats and `failed: 0`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fluxor_registry::endpoint::HttpEndpoint;
use fluxor_registry::{
    CheckSpec, CircuitBreaker, CircuitBreakerConfig, HealthChecker, HealthCheckerConfig,
    HealthConfig, LoadBalancer, Protocol, Query, ServiceDefinition, ServiceDiscovery,
    ServiceRegistry, Strategy,
};
use futures_util::StreamExt;
use http_body_util::{BodyExt, Empty, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tower::retry::{Policy, RetryLayer};
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

/// A backend: `/health` answers 200, anything else its name. Killing it
/// closes its listener and every open connection.
async fn backend(
    name: &'static str,
) -> Result<(SocketAddr, tokio::task::AbortHandle), std::io::Error> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            connections.spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| async move {
                    let body = if req.uri().path() == "/health" {
                        "ok"
                    } else {
                        name
                    };
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok((addr, task.abort_handle()))
}

/// Retries a failed request once (the balancer then picks another backend).
#[derive(Clone)]
struct RetryOnce(bool);

impl<Res> Policy<Request<Empty<Bytes>>, Res, BoxError> for RetryOnce {
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        _: &mut Request<Empty<Bytes>>,
        result: &mut Result<Res, BoxError>,
    ) -> Option<Self::Future> {
        if result.is_err() && !self.0 {
            self.0 = true;
            Some(std::future::ready(()))
        } else {
            None
        }
    }

    fn clone_request(&mut self, req: &Request<Empty<Bytes>>) -> Option<Request<Empty<Bytes>>> {
        Some(req.clone())
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // The four pieces of the original module.
    let registry = ServiceRegistry::builder().build().await?;
    let health_checker = HealthChecker::new(
        registry.clone(),
        HealthCheckerConfig {
            interval: Duration::from_millis(100),
            ..Default::default()
        },
    );
    let discovery = ServiceDiscovery::new(
        registry.clone(),
        health_checker.clone(),
        LoadBalancer::new(Strategy::RoundRobin),
        CircuitBreaker::new(CircuitBreakerConfig {
            failure_threshold: 3,
            reset_timeout: Duration::from_secs(30),
            ..Default::default()
        }),
    );

    // Every event, kept for the report.
    let events = Arc::new(Mutex::new(Vec::new()));
    let mut subscription = registry.subscribe();
    let log = events.clone();
    tokio::spawn(async move {
        while let Ok(event) = subscription.recv().await {
            if let Ok(mut log) = log.lock() {
                log.push(format!("{:<26} {}", event.name(), event.key()));
            }
        }
    });

    println!("starting three backends and registering them with health checks");
    let mut kill = BTreeMap::new();
    for (n, name) in ["inventory-1", "inventory-2", "inventory-3"]
        .into_iter()
        .enumerate()
    {
        let (addr, handle) = backend(name).await?;
        kill.insert(name, handle);
        let service = registry
            .register(
                ServiceDefinition::new("inventory-service", "127.0.0.1", addr.port())
                    .id(name.parse()?)
                    .version("1.0.0")
                    .protocol(Protocol::Http)
                    .tags(["inventory", "core"])
                    .metadata("region", "us-east-1")
                    .metadata("capabilities", json!(["read", "write"]))
                    .metadata("zone", n),
            )
            .await?;
        health_checker.start_health_checks(
            &service,
            HealthConfig {
                checks: vec![
                    CheckSpec::http("/health")
                        .name("http-health")
                        .timeout(Duration::from_millis(500)),
                ],
                ..Default::default()
            },
        )?;
    }

    let query = Query::name("inventory-service");
    let mut available = discovery.watch_stream(&query);
    tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(set) = available.next().await {
            if set.len() == 3 {
                break;
            }
        }
    })
    .await?;
    println!("all three passed their first health check");

    // The tower face: the same pieces as one balanced client.
    let balanced =
        tower::buffer::Buffer::new(discovery.service(query.clone(), HttpEndpoint::http()), 64);
    let mut client = ServiceBuilder::new()
        .layer(RetryLayer::new(RetryOnce(false)))
        .service(balanced);

    let mut spread: BTreeMap<String, usize> = BTreeMap::new();
    let mut failed = 0;
    for n in 0..1_000 {
        if n == 333 {
            println!("request {n}: killing inventory-2");
            if let Some(handle) = kill.get("inventory-2") {
                handle.abort();
            }
        }
        let request = Request::get("/api/inventory").body(Empty::<Bytes>::new())?;
        let response = async {
            let response = client.ready().await?.call(request).await?;
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, BoxError>(String::from_utf8_lossy(&body).into_owned())
        };
        match response.await {
            Ok(name) => *spread.entry(name).or_default() += 1,
            Err(e) => {
                failed += 1;
                eprintln!("request {n} failed: {e}");
            }
        }
    }

    println!("\nspread:");
    for (name, count) in &spread {
        println!("  {name:<12} {count:>4}");
    }
    println!("\nevents:");
    for event in events.lock().map(|e| e.clone()).unwrap_or_default() {
        println!("  {event}");
    }
    println!(
        "\nstats:\n{}",
        serde_json::to_string_pretty(&discovery.get_stats())?
    );
    println!(
        "\navailable now: {:?}",
        discovery
            .get_available_services(&query)
            .iter()
            .map(|i| i.id().to_string())
            .collect::<Vec<_>>()
    );
    println!("failed: {failed}");
    if failed > 0 || spread.values().sum::<usize>() != 1_000 {
        return Err(format!("{failed} requests failed").into());
    }
    Ok(())
}
