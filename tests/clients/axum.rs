//! An axum gateway forwarding to a discovered service with ip-hash on the
//! client address from `ConnectInfo`.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::any;
use bytes::Bytes;
use fluxor_registry::balance::HttpContext;
use fluxor_registry::endpoint::HttpEndpoint;
use fluxor_registry::{LoadBalanceLayer, Query, ServiceDefinition, ServiceRegistry, Strategy};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tower::buffer::Buffer;
use tower::{Service, ServiceBuilder, ServiceExt};

use crate::servers::within;
use crate::support::HttpServer;

/// Starts three backends and a gateway in front of them; returns the
/// gateway's address. With `connect_info` the app is served with
/// `into_make_service_with_connect_info::<SocketAddr>()`, else without.
async fn gateway(connect_info: bool) -> (SocketAddr, Vec<HttpServer>) {
    let backends = vec![
        HttpServer::start("a").await,
        HttpServer::start("b").await,
        HttpServer::start("c").await,
    ];
    let registry = ServiceRegistry::builder().build().await.unwrap();
    for b in &backends {
        registry
            .register(ServiceDefinition::new("backend", "127.0.0.1", b.port()))
            .await
            .unwrap();
    }
    let balanced = ServiceBuilder::new()
        .layer(LoadBalanceLayer::new(Strategy::IpHash).context(HttpContext::new()))
        .service(
            registry
                .discover(Query::name("backend"))
                .endpoints(HttpEndpoint::<Body>::http()),
        );
    let balanced = Buffer::new(balanced, 64);
    let app = Router::new().route(
        "/api/{*rest}",
        any(move |req: Request| {
            let mut backend = balanced.clone();
            async move {
                match backend.ready().await {
                    Ok(ready) => match ready.call(req).await {
                        Ok(response) => response.map(Body::new).into_response(),
                        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
                    },
                    Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
                }
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        if connect_info {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
        } else {
            axum::serve(listener, app.into_make_service()).await
        }
    });
    (addr, backends)
}

/// A client whose connections come from `local` (any 127.0.0.0/8 address
/// is loopback on Linux).
fn client_from(local: Ipv4Addr) -> Client<HttpConnector, Empty<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_local_address(Some(IpAddr::V4(local)));
    Client::builder(TokioExecutor::new()).build(connector)
}

async fn backend_for(client: &Client<HttpConnector, Empty<Bytes>>, gateway: SocketAddr) -> String {
    let uri = format!("http://{gateway}/api/orders").parse().unwrap();
    let response = within(client.get(uri)).await.expect("gateway answers");
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

#[tokio::test]
async fn gateway_sends_each_client_to_one_backend_by_connect_info() {
    let (gateway, backends) = gateway(true).await;
    let mut chosen = HashMap::new();
    for n in 1..=12u8 {
        let local = Ipv4Addr::new(127, 0, 0, n);
        let client = client_from(local);
        let mut seen = HashSet::new();
        for _ in 0..5 {
            seen.insert(backend_for(&client, gateway).await);
        }
        assert_eq!(seen.len(), 1, "client {local} went to {seen:?}");
        chosen.insert(local, seen.into_iter().next().unwrap());
    }
    let used: HashSet<_> = chosen.values().collect();
    assert!(
        used.len() >= 2,
        "12 clients all hashed to one backend: {chosen:?}"
    );
    assert_eq!(backends.iter().map(HttpServer::hits).sum::<usize>(), 60);
}

#[tokio::test]
async fn without_connect_info_ip_hash_has_no_address_to_hash() {
    // The control: the same gateway served without ConnectInfo has no
    // client address, so ip-hash picks at random and one client is spread.
    let (gateway, _backends) = gateway(false).await;
    let client = client_from(Ipv4Addr::LOCALHOST);
    let mut seen = HashSet::new();
    for _ in 0..30 {
        seen.insert(backend_for(&client, gateway).await);
    }
    assert!(seen.len() > 1, "30 requests all went to {seen:?}");
}
