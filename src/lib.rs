//! Tower middleware for client-side service discovery.
//!
//! `fluxor-registry` is the Rust form of the Fluxor service registry module:
//! a [`ServiceRegistry`] of service instances (register, deregister,
//! heartbeat, query; TTL expiry; persistence; events) that feeds `tower`'s
//! [`Discover`](tower::discover::Discover) stream, so that any tower balancer
//! and client stack can follow it.
//!
//! # Examples
//!
//! The original module's usage, in Rust (this is also the README's example):
//!
//! ```
//! use std::time::Duration;
//! use fluxor_registry::{
//!     ServiceRegistry, ServiceDefinition, Protocol, Query,
//!     HealthChecker, HealthCheckerConfig, HealthConfig, CheckSpec,
//!     LoadBalancer, Strategy, RequestContext,
//!     CircuitBreaker, CircuitBreakerConfig, CircuitState,
//!     ServiceDiscovery,
//! };
//! use serde_json::json;
//! # use http_body_util::BodyExt;
//! # async fn http_get(url: &str) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
//! #     let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
//! #         .build_http::<http_body_util::Empty<bytes::Bytes>>();
//! #     let body = client.get(url.parse()?).await?.into_body().collect().await?.to_bytes();
//! #     Ok(String::from_utf8(body.to_vec())?)
//! # }
//! # async fn serve() -> u16 {
//! #     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! #     let port = listener.local_addr().unwrap().port();
//! #     tokio::spawn(async move {
//! #         while let Ok((stream, _)) = listener.accept().await {
//! #             tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(
//! #                 hyper_util::rt::TokioIo::new(stream),
//! #                 hyper::service::service_fn(|_| async {
//! #                     Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from("42 widgets"))))
//! #                 }),
//! #             ));
//! #         }
//! #     });
//! #     port
//! # }
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! # let dir = tempfile::tempdir()?;
//! # let port = serve().await;
//! let registry = ServiceRegistry::builder().persistence(dir.path().join("registry.db")).build().await?;
//! let health_checker = HealthChecker::new(registry.clone(), HealthCheckerConfig {
//!     interval: Duration::from_secs(10), ..Default::default()
//! });
//! let load_balancer = LoadBalancer::new(Strategy::RoundRobin);
//! let circuit_breaker = CircuitBreaker::new(CircuitBreakerConfig {
//!     failure_threshold: 5, reset_timeout: Duration::from_secs(30), ..Default::default()
//! });
//! let discovery = ServiceDiscovery::new(
//!     registry.clone(), health_checker.clone(), load_balancer, circuit_breaker);
//!
//! let service = registry.register(
//!     ServiceDefinition::new("inventory-service", "localhost", port)
//!         .version("1.0.0")
//!         .protocol(Protocol::Http)
//!         .tags(["inventory", "core"])
//!         .metadata("region", "us-east-1")
//!         .metadata("capabilities", json!(["read", "write"])),
//! ).await?;
//!
//! health_checker.start_health_checks(&service, HealthConfig {
//!     interval: Duration::from_secs(5),
//!     checks: vec![CheckSpec::http("/health").name("http-health").timeout(Duration::from_secs(3))],
//!     ..Default::default()
//! })?;
//! # let mut up = discovery.watch_stream(&Query::name("inventory-service"));
//! # while futures_util::StreamExt::next(&mut up).await.is_some_and(|set| set.is_empty()) {}
//!
//! let response = discovery.execute(
//!     &Query::name("inventory-service").healthy_only(),
//!     |instance| async move { http_get(&format!("{}/api/inventory", instance.base_url())).await },
//!     &RequestContext::default(),
//! ).await?;
//! assert_eq!(response, "42 widgets");
//!
//! let unwatch = discovery.watch(&Query::name("inventory-service"), |instances| {
//!     println!("available: {}", instances.len());
//! });
//! let stats = discovery.get_stats();
//! assert_eq!(stats.services["inventory-service"].successes, 1);
//! assert_eq!(discovery.circuit_breaker().get_state(service.id().as_str()), CircuitState::Closed);
//! unwatch.unwatch();
//! # Ok(())
//! # }
//! ```
//!
//! And the tower face of the same pieces:
//!
//! ```
//! # use std::time::Duration;
//! # use fluxor_registry::{
//! #     CircuitBreakerConfig, CircuitBreakerLayer, EndpointLayer, HealthChecker, HealthCheckerConfig,
//! #     HealthFilterLayer, LoadBalanceLayer, Query, ServiceRegistry, Strategy,
//! # };
//! # use fluxor_registry::endpoint::HttpEndpoint;
//! # use tower::ServiceBuilder;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let registry = ServiceRegistry::builder().build().await?;
//! # let health_checker = HealthChecker::new(registry.clone(), HealthCheckerConfig::default());
//! # let breaker_config = CircuitBreakerConfig::default();
//! # let hyper_client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
//! #     .build_http::<http_body_util::Empty<bytes::Bytes>>();
//! let client = ServiceBuilder::new()
//!     .layer(LoadBalanceLayer::new(Strategy::LeastConnections))
//!     .layer(EndpointLayer::new(CircuitBreakerLayer::new(breaker_config)))
//!     .layer(HealthFilterLayer::new(health_checker.clone()))
//!     .service(registry.discover(Query::name("inventory-service")).endpoints(HttpEndpoint::new(hyper_client)));
//! // client: impl Service<http::Request<B>> — wrap it further with tower-http, retry, timeout …
//! # fn is_http_service<S: tower::Service<http::Request<http_body_util::Empty<bytes::Bytes>>>>(_: &S) {}
//! # is_http_service(&client);
//! # Ok(())
//! # }
//! ```
//!
//! # Cargo features
//!
//! The default build needs nothing but the Rust toolchain. `full` turns on
//! every optional integration:
//!
//! * `hyper` (default): [`endpoint::HttpEndpoint`], every instance through
//!   one shared hyper-util client.
//! * `grpc`: gRPC health checks (`CheckSpec::grpc`) through tonic and
//!   tonic-health (pure Rust, no `protoc`).
//! * `etcd`: the etcd backend (`RegistryBuilder::etcd`); needs `protoc` to
//!   build.

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod balance;
pub mod circuit;
pub mod discovery;
pub mod endpoint;
pub mod event;
pub mod health;
pub mod instance;
pub mod query;
pub mod registry;
pub mod validation;

pub use balance::{LoadBalanceLayer, LoadBalancer, RequestContext, Strategy};
pub use circuit::{
    CircuitBreaker, CircuitBreakerConfig, CircuitBreakerLayer, CircuitError, CircuitOpenError,
    CircuitState,
};
pub use discovery::{
    DiscoveryConfig, DiscoveryStats, ExecuteError, NoInstances, ServiceDiscovery, WatchHandle,
};
pub use endpoint::EndpointLayer;
#[cfg(feature = "hyper")]
pub use endpoint::HttpEndpoint;
pub use event::{DeregisterReason, Event, EventHub, Subscription, SubscriptionError};
pub use health::{
    CheckKind, CheckReport, CheckResult, CheckSpec, CheckerStats, HealthChecker,
    HealthCheckerConfig, HealthConfig, HealthError, HealthFilterDiscover, HealthFilterLayer,
    HealthReport,
};
pub use instance::{HealthStatus, InstanceId, Protocol, ServiceDefinition, ServiceInstance};
pub use query::Query;
pub use registry::{
    Backend, BackendError, BackendStatus, DiscoverExt, Endpoints, FileBackend, MakeEndpoint,
    RegistryBuilder, RegistryError, ServiceDiscover, ServiceRegistry,
};
pub use validation::{ValidationError, ValidationErrorKind};

#[cfg(feature = "etcd")]
#[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
pub use registry::etcd::{EtcdBackend, EtcdOptions};
