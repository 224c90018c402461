//! Real HTTP servers on 127.0.0.1, one slow: least-connections and p2c send
//! it clearly less than its share; round-robin (the control) does not.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fluxor_registry::{
    LoadBalanceLayer, Query, ServiceDefinition, ServiceInstance, ServiceRegistry, Strategy,
};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn as hyper_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::{Layer, Service, ServiceExt, service_fn};

use crate::support::{get_text, http_client};

/// An HTTP server that answers with its name after `delay`.
async fn server(name: &'static str, delay: Duration) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let h = h.clone();
            tokio::spawn(async move {
                let svc = hyper_fn(move |_: Request<hyper::body::Incoming>| {
                    h.fetch_add(1, Ordering::SeqCst);
                    async move {
                        tokio::time::sleep(delay).await; // the server's own slowness
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(name))))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (port, hits)
}

/// Sends `total` requests, `concurrency` at a time; returns the slow
/// server's share.
async fn slow_share(strategy: Strategy, total: usize, concurrency: usize) -> f64 {
    let registry = ServiceRegistry::builder().build().await.unwrap();
    let (slow_port, slow_hits) = server("slow", Duration::from_millis(40)).await;
    registry
        .register(ServiceDefinition::new("web", "127.0.0.1", slow_port))
        .await
        .unwrap();
    for name in ["fast-1", "fast-2"] {
        let (port, _) = server(name, Duration::ZERO).await;
        registry
            .register(ServiceDefinition::new("web", "127.0.0.1", port))
            .await
            .unwrap();
    }
    let client = http_client();
    let endpoints = registry
        .discover(Query::name("web"))
        .endpoints(move |i: &ServiceInstance| {
            let (client, url) = (client.clone(), format!("{}/", i.base_url()));
            service_fn(move |()| {
                let (client, url) = (client.clone(), url.clone());
                async move { get_text(&client, url).await }
            })
        });
    let mut balancer = LoadBalanceLayer::new(strategy).seed(11).layer(endpoints);
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut tasks = Vec::new();
    for _ in 0..total {
        let permit = permits.clone().acquire_owned().await.unwrap();
        let fut = balancer.ready().await.unwrap().call(());
        tasks.push(tokio::spawn(async move {
            let reply = fut.await;
            drop(permit);
            reply
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let share = slow_hits.load(Ordering::SeqCst) as f64 / total as f64;
    println!("{strategy}: slow server share {share:.3}");
    share
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_and_p2c_send_less_to_a_slow_server() {
    let rr = slow_share(Strategy::RoundRobin, 300, 12).await;
    assert!(
        rr > 0.30,
        "control: round-robin gives the slow server its third, got {rr:.2}"
    );
    for strategy in [Strategy::LeastConnections, Strategy::P2cPeakEwma] {
        let share = slow_share(strategy, 300, 12).await;
        assert!(
            share < 0.15,
            "{strategy}: the slow server got {share:.2} of requests"
        );
        assert!(
            share > 0.0,
            "{strategy}: the slow server still gets some traffic"
        );
    }
}
