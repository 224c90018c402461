//! Load balancing: [`LoadBalancer`] (choose one of a slice of instances) and
//! [`LoadBalanceLayer`] (a `Discover` of endpoints to one balanced
//! `Service`), sharing one implementation of each [`Strategy`]:
//!
//! | strategy | how | source |
//! |---|---|---|
//! | `round-robin` | each in turn, a counter | |
//! | `least-connections` | fewest in flight, ties rotate; O(1) buckets | |
//! | `weighted` | smooth weighted round-robin, one precomputed cycle | nginx; EDF as in Envoy for huge sets |
//! | `random` | uniform, seedable | |
//! | `ip-hash` | consistent hashing on a ring with a lookup table, weighted | Karger et al. / ketama |
//! | `p2c` | two random choices, peak-EWMA latency × in flight ÷ weight | Mitzenmacher; Finagle, tower |
//!
//! Sticky sessions ([`StickyConfig`]) work on top of any strategy.
//!
//! The layer follows tower's rules: `poll_ready` is `Pending` (and woken)
//! while no endpoint is ready, a busy endpoint is skipped rather than waited
//! for, an endpoint that errors in `poll_ready` is retried later rather than
//! dropped, and strategy state survives membership changes. Strategies that
//! need the request (ip-hash, sticky sessions) choose in `call`; requests
//! give their context through an [`ExtractContext`] such as [`HttpContext`].
//! A [`TriedEndpoints`] in a request's extensions makes retries avoid the
//! endpoints already tried. Choosing costs no allocation and no lock, and
//! does not grow with the number of endpoints.
//!
//! # Examples
//!
//! ```
//! use std::convert::Infallible;
//! use fluxor_registry::{LoadBalanceLayer, Query, ServiceDefinition, ServiceInstance, ServiceRegistry, Strategy};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower::BoxError> {
//! let registry = ServiceRegistry::builder().build().await?;
//! for port in [9001, 9002] {
//!     registry.register(ServiceDefinition::new("echo", "127.0.0.1", port)).await?;
//! }
//! let endpoints = registry.discover(Query::name("echo")).endpoints(|i: &ServiceInstance| {
//!     let port = i.port();
//!     service_fn(move |_: ()| async move { Ok::<_, Infallible>(port) })
//! });
//! let mut client = ServiceBuilder::new()
//!     .layer(LoadBalanceLayer::new(Strategy::RoundRobin))
//!     .service(endpoints);
//! let a = client.ready().await?.call(()).await?;
//! let b = client.ready().await?.call(()).await?;
//! assert_ne!(a, b);
//! # Ok(())
//! # }
//! ```

mod context;
mod dirty;
mod error;
mod future;
mod hash;
mod ip_hash;
mod layer;
mod least_conn;
mod load_balancer;
mod p2c;
mod service;
mod sticky;
mod strategy;
mod weighted;

pub use context::{
    ExtractContext, HttpContext, NoContext, RequestContext, RequestKeys, TriedEndpoints,
};
pub use error::{NoEndpoints, NotReady};
pub use future::ResponseFuture;
pub use layer::{LoadBalanceLayer, Unweighted, Weigh};
pub use load_balancer::LoadBalancer;
pub use service::LoadBalance;
pub use sticky::StickyConfig;
pub use strategy::{Strategy, UnknownStrategy};
