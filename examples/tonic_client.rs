//! A generated tonic client whose transport is the balanced stack: one
//! `tonic::transport::Channel` per discovered instance.
//!
//! ```text
//! cargo run --example tonic_client --features tonic
//! ```
//!
//! Starts three gRPC servers with the standard health service on
//! 127.0.0.1, registers them, and calls `grpc.health.v1.Health/Check` 300
//! times through `HealthClient::new(balanced)` (the client tonic-health
//! ships, so no `protoc`), 30 at a time; then deregisters one server and
//! calls 300 more times. Prints the spread. Exits 0 in well under a second.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use fluxor_registry::endpoint::TonicEndpoint;
use fluxor_registry::{
    LoadBalanceLayer, Protocol, Query, ServiceDefinition, ServiceRegistry, Strategy,
};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::buffer::BufferLayer;
use tower::layer::layer_fn;
use tower::{BoxError, Service, ServiceBuilder};

/// Counts the calls a server serves.
#[derive(Clone)]
struct Count<S> {
    inner: S,
    calls: Arc<AtomicUsize>,
}

impl<S: Service<R>, R> Service<R> for Count<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> S::Future {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.call(req)
    }
}

/// A tonic server with the health service, SERVING; returns its port and
/// its call counter.
async fn grpc_server() -> Result<(u16, Arc<AtomicUsize>), BoxError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let server = tonic::transport::Server::builder()
        .layer(layer_fn(move |inner| Count {
            inner,
            calls: c.clone(),
        }))
        .add_service(health)
        .serve_with_incoming(TcpListenerStream::new(listener));
    tokio::spawn(async move {
        let _reporter = reporter;
        server.await
    });
    Ok((port, calls))
}

fn spread(servers: &[(u16, Arc<AtomicUsize>)]) -> String {
    servers
        .iter()
        .map(|(port, calls)| format!("{port}: {}", calls.load(Ordering::Relaxed)))
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let registry = ServiceRegistry::builder().build().await?;
    let mut servers = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (port, calls) = grpc_server().await?;
        let instance = registry
            .register(
                ServiceDefinition::new("health-grpc", "127.0.0.1", port).protocol(Protocol::Grpc),
            )
            .await?;
        ids.push(instance.id().clone());
        servers.push((port, calls));
    }

    // One lazily connecting Channel per instance, balanced, made Clone by
    // a Buffer: the transport of any generated client.
    let balanced = ServiceBuilder::new()
        .layer(BufferLayer::new(128))
        .layer(LoadBalanceLayer::new(Strategy::RoundRobin))
        .service(
            registry
                .discover(Query::name("health-grpc"))
                .endpoints(TonicEndpoint::new()),
        );
    let client = HealthClient::new(balanced);

    for round in 0..2 {
        if round == 1 {
            registry.deregister(&ids[0]).await?;
            println!("deregistered the server on port {}", servers[0].0);
        }
        let before = servers[0].1.load(Ordering::Relaxed);
        for _ in 0..10 {
            let mut batch = Vec::new();
            for _ in 0..30 {
                let mut client = client.clone();
                batch.push(tokio::spawn(async move {
                    client
                        .check(HealthCheckRequest {
                            service: String::new(),
                        })
                        .await
                }));
            }
            for call in batch {
                let reply = call.await??.into_inner();
                if reply.status() != tonic_health::pb::health_check_response::ServingStatus::Serving
                {
                    return Err(format!("unexpected status {:?}", reply.status()).into());
                }
            }
        }
        println!("after {} checks: {}", 300 * (round + 1), spread(&servers));
        if round == 1 && servers[0].1.load(Ordering::Relaxed) != before {
            return Err("the deregistered server still got calls".into());
        }
    }
    Ok(())
}
