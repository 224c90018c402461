//! An axum gateway: a route that forwards to a discovered service, the
//! backend chosen by ip-hash on the client address from `ConnectInfo`.
//!
//! ```text
//! cargo run --example axum_gateway --features axum,hyper
//! ```
//!
//! Starts three HTTP backends on 127.0.0.1 and registers them, serves the
//! gateway with `into_make_service_with_connect_info::<SocketAddr>()`, then
//! calls it a few times from each of a few loopback addresses (127.0.0.1,
//! and 127.0.0.2–4 where the OS routes all of 127/8 to loopback, as Linux
//! does) and shows that each client always lands on the same backend.
//! Exits 0 in well under a second.

mod backends;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
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
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

use backends::{Backend, spread};

/// The gateway's router: `/api/*` goes to a backend of `orders`.
async fn app(registry: &ServiceRegistry) -> Router {
    // HttpContext reads the client address from the ConnectInfo<SocketAddr>
    // extension axum adds; the request is forwarded with its extensions.
    let balanced = ServiceBuilder::new()
        .layer(LoadBalanceLayer::new(Strategy::IpHash).context(HttpContext::new()))
        .service(
            registry
                .discover(Query::name("orders"))
                .endpoints(HttpEndpoint::<Body>::http()),
        );
    // A Buffer makes the balancer Clone, to share between requests.
    let balanced = Buffer::new(balanced, 1024);
    Router::new().route(
        "/api/{*rest}",
        any(move |req: Request| {
            let backend = balanced.clone();
            async move { forward(backend, req).await }
        }),
    )
}

async fn forward<S>(mut backend: S, req: Request) -> Response
where
    S: Service<Request, Response = http::Response<hyper::body::Incoming>, Error = BoxError>,
{
    let result = match backend.ready().await {
        Ok(ready) => ready.call(req).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(response) => response.map(Body::new).into_response(),
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

/// GETs `/api/orders` from the gateway over a connection from `local`.
async fn call_from(local: Ipv4Addr, gateway: SocketAddr) -> Result<String, BoxError> {
    let mut connector = HttpConnector::new();
    connector.set_local_address(Some(IpAddr::V4(local)));
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let response = client
        .get(format!("http://{gateway}/api/orders").parse()?)
        .await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        return Err(format!("gateway answered {status}").into());
    }
    Ok(String::from_utf8(body.to_vec())?)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let backends = [
        Backend::start("orders-a").await?,
        Backend::start("orders-b").await?,
        Backend::start("orders-c").await?,
    ];
    let registry = ServiceRegistry::builder().build().await?;
    for b in &backends {
        registry
            .register(ServiceDefinition::new("orders", "127.0.0.1", b.port))
            .await?;
    }

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let gateway = listener.local_addr()?;
    let app = app(&registry).await;
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    println!("gateway on http://{gateway}");

    for n in 1..=4u8 {
        let client = Ipv4Addr::new(127, 0, 0, n);
        let mut landed = Vec::new();
        for _ in 0..5 {
            match call_from(client, gateway).await {
                Ok(backend) => landed.push(backend),
                // Only 127.0.0.1 is loopback everywhere.
                Err(e) if n > 1 && landed.is_empty() => {
                    println!("client {client}: not usable here ({e}); skipped");
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(first) = landed.first() {
            println!("client {client}: {}", landed.join(" "));
            if landed.iter().any(|b| b != first) {
                return Err(format!("client {client} moved between backends").into());
            }
        }
    }
    println!("backends: {}", spread(&backends));
    Ok(())
}
