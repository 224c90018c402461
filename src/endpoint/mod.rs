//! Endpoints: from discovered instances to the services that talk to them.
//!
//! [`EndpointLayer`] applies any `tower` layer to every endpoint service of a
//! `Discover` stream as it comes out, so per-endpoint middleware (a circuit
//! breaker, a timeout, load tracking) composes in a `ServiceBuilder` between
//! discovery and the balancer.
//!
//! Ready-made endpoint makers, each behind a cargo feature, for the
//! [`endpoints`](crate::ServiceDiscover::endpoints) step:
//!
//! * `HttpEndpoint` (`hyper`): every instance through one shared hyper-util
//!   client, the request's scheme and authority replaced by the instance's.
//! * `ReqwestEndpoint` (`reqwest`): the same over one shared
//!   `reqwest::Client`; `ReqwestService` alone makes a reqwest client a
//!   tower `Service<http::Request<B>>`.
//! * `TonicEndpoint` (`tonic`): a lazily connecting
//!   `tonic::transport::Channel` per instance, so a balanced stack is the
//!   transport of a generated tonic client.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use fluxor_registry::{Query, ServiceDefinition, ServiceInstance, ServiceRegistry};
//! use fluxor_registry::endpoint::EndpointLayer;
//! use futures_util::StreamExt;
//! use tower::{ServiceBuilder, discover::Change, service_fn, timeout::TimeoutLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = ServiceRegistry::builder().build().await?;
//! registry.register(ServiceDefinition::new("echo", "127.0.0.1", 9001)).await?;
//!
//! let endpoints = registry.discover(Query::name("echo")).endpoints(|i: &ServiceInstance| {
//!     let port = i.port();
//!     service_fn(move |_: ()| async move { Ok::<_, std::convert::Infallible>(port) })
//! });
//! // Every endpoint gets its own timeout.
//! let mut with_timeouts = ServiceBuilder::new()
//!     .layer(EndpointLayer::new(TimeoutLayer::new(Duration::from_secs(1))))
//!     .service(endpoints);
//! assert!(matches!(with_timeouts.next().await, Some(Ok(Change::Insert(..)))));
//! # Ok(())
//! # }
//! ```

#[cfg(feature = "hyper")]
mod http;
pub(crate) mod layer;
#[cfg(feature = "reqwest")]
mod reqwest;
#[cfg(any(feature = "hyper", feature = "reqwest", feature = "tonic"))]
mod target;
#[cfg(feature = "tonic")]
mod tonic;

#[cfg(feature = "reqwest")]
pub use self::reqwest::{ReqwestEndpoint, ReqwestError, ReqwestFuture, ReqwestService};
#[cfg(feature = "tonic")]
pub use self::tonic::{TonicChannel, TonicEndpoint, TonicError, TonicFuture};
#[cfg(feature = "hyper")]
pub use http::{EndpointError, HttpEndpoint, InstanceClient, InstanceFuture};
pub use layer::{EndpointLayer, LayeredDiscover};
#[cfg(any(feature = "hyper", feature = "reqwest", feature = "tonic"))]
pub use target::AddressError;
