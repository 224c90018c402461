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
//! ```
//! use std::time::Duration;
//! use fluxor_registry::{Event, Protocol, Query, ServiceDefinition, ServiceRegistry};
//! use serde_json::json;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let path = dir.path().join("registry.db");
//! let registry = ServiceRegistry::builder().persistence(&path).build().await?;
//! let mut events = registry.subscribe();
//!
//! let service = registry
//!     .register(
//!         ServiceDefinition::new("inventory-service", "localhost", 3001)
//!             .version("1.0.0")
//!             .protocol(Protocol::Http)
//!             .tags(["inventory", "core"])
//!             .metadata("region", "us-east-1")
//!             .metadata("capabilities", json!(["read", "write"]))
//!             .ttl(Duration::from_secs(30)),
//!     )
//!     .await?;
//! assert_eq!(service.base_url(), "http://localhost:3001");
//! assert_eq!(events.recv().await?.name(), "service-registered");
//!
//! let query = Query::name("inventory-service").version("^1.0")?.tag("core").healthy_only();
//! assert_eq!(registry.find_services(&query).len(), 1);
//!
//! registry.heartbeat(service.id()).await?;
//! registry.deregister(service.id()).await?;
//! assert!(matches!(events.recv().await?, Event::Deregistered { .. }));
//! # Ok(())
//! # }
//! ```
//!
//! # Cargo features
//!
//! The default build needs nothing but the Rust toolchain. `full` turns on
//! every optional integration:
//!
//! * `grpc`: gRPC health checks (`CheckSpec::grpc`) through tonic and
//!   tonic-health (pure Rust, no `protoc`).

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
