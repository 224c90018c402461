//! How many requests per second does a hyper client keep through the whole
//! stack (registry discovery → health filter → per-instance circuit breaker
//! → balancer), against the same hyper client used bare, on the same local
//! server in the same run? Goal: at least 0.95 of bare.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fluxor_registry::endpoint::HttpEndpoint;
use fluxor_registry::{
    CircuitBreaker, CircuitBreakerConfig, HealthChecker, HealthCheckerConfig, LoadBalancer, Query,
    ServiceDefinition, ServiceDiscovery, ServiceRegistry, Strategy,
};
use http_body_util::{BodyExt, Empty, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tower::{Service, ServiceExt};

type Body = Empty<Bytes>;

/// One request through the bare client, body read.
async fn bare_once(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Body>,
    url: &hyper::Uri,
) {
    let response = client.get(url.clone()).await.expect("response");
    response.into_body().collect().await.expect("body");
}

/// One request through a balanced stack, body read.
async fn stack_once<S>(svc: &mut S)
where
    S: Service<hyper::Request<Body>, Response = hyper::Response<hyper::body::Incoming>>,
    S::Error: std::fmt::Debug,
{
    let req = hyper::Request::get("/").body(Body::new()).expect("request");
    let response = svc
        .ready()
        .await
        .expect("ready")
        .call(req)
        .await
        .expect("response");
    response.into_body().collect().await.expect("body");
}

async fn server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    port
}

fn stack(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (port, client, mut balanced, mut lb_only) = rt.block_on(async {
        let port = server().await;
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let registry = ServiceRegistry::builder().build().await.expect("registry");
        registry
            .register(ServiceDefinition::new("bench", "127.0.0.1", port))
            .await
            .expect("register");
        let discovery = ServiceDiscovery::new(
            registry.clone(),
            HealthChecker::new(registry.clone(), HealthCheckerConfig::default()),
            LoadBalancer::new(Strategy::RoundRobin),
            CircuitBreaker::new(CircuitBreakerConfig::default()),
        );
        let balanced = discovery.service(Query::name("bench"), HttpEndpoint::new(client.clone()));
        let lb_only = tower::Layer::layer(
            &fluxor_registry::LoadBalanceLayer::new(Strategy::RoundRobin),
            registry
                .discover(Query::name("bench"))
                .endpoints(HttpEndpoint::new(client.clone())),
        );
        (port, client, balanced, lb_only)
    });
    let url: hyper::Uri = format!("http://127.0.0.1:{port}/").parse().expect("uri");

    let mut group = c.benchmark_group("stack");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("bare-hyper-client", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = tokio::time::Instant::now();
                for _ in 0..iters {
                    bare_once(&client, &url).await;
                }
                start.elapsed()
            })
        })
    });
    for (name, svc) in [
        ("full-stack", &mut balanced as &mut dyn StackOnce),
        ("balancer-only", &mut lb_only),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = tokio::time::Instant::now();
                    for _ in 0..iters {
                        svc.once().await;
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();

    // Load on a shared machine drifts between benchmarks; alternate the two
    // clients in small blocks and compare the totals, so both see the same
    // conditions.
    let (bare, full) = rt.block_on(async {
        let (mut bare, mut full) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..200 {
            let start = tokio::time::Instant::now();
            for _ in 0..50 {
                bare_once(&client, &url).await;
            }
            bare += start.elapsed();
            let start = tokio::time::Instant::now();
            for _ in 0..50 {
                stack_once(&mut balanced).await;
            }
            full += start.elapsed();
        }
        (bare, full)
    });
    println!(
        "interleaved, 10,000 requests each: bare {:.0} req/s, full stack {:.0} req/s, ratio {:.3}",
        10_000.0 / bare.as_secs_f64(),
        10_000.0 / full.as_secs_f64(),
        bare.as_secs_f64() / full.as_secs_f64()
    );
}

/// A stack to send one request through, as a trait object so both stacks
/// share the benchmark loop.
trait StackOnce {
    fn once(&mut self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + '_>>;
}

impl<S> StackOnce for S
where
    S: Service<hyper::Request<Body>, Response = hyper::Response<hyper::body::Incoming>>,
    S::Error: std::fmt::Debug,
{
    fn once(&mut self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + '_>> {
        Box::pin(stack_once(self))
    }
}

criterion_group!(benches, stack);
criterion_main!(benches);
