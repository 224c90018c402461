//! The service registry: [`ServiceRegistry`], its [`Backend`]s and its
//! `tower` [`Discover`](tower::discover::Discover) stream.
//!
//! Instances are registered with a [`ServiceDefinition`], found with a
//! [`Query`], kept alive by heartbeats when they have a TTL, and followed as
//! a stream with [`ServiceRegistry::discover`]. Every change is also an
//! [`Event`](crate::Event).
//!
//! Storage is a [`Backend`]: [`MemoryBackend`] by default, [`FileBackend`]
//! with [`RegistryBuilder::persistence`], `EtcdBackend` with
//! `RegistryBuilder::etcd` (cargo feature `etcd`), or one of your own.
//!
//! [`ServiceDefinition`]: crate::ServiceDefinition
//! [`Query`]: crate::Query
//!
//! # Examples
//!
//! Feeding tower's own balancer from the registry:
//!
//! ```
//! use std::convert::Infallible;
//! use fluxor_registry::{Query, ServiceDefinition, ServiceInstance, ServiceRegistry};
//! use tower::{Service, ServiceExt, balance::p2c::Balance, load::Constant, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let registry = ServiceRegistry::builder().build().await?;
//! registry.register(ServiceDefinition::new("echo", "127.0.0.1", 9001)).await?;
//!
//! let endpoints = registry.discover(Query::name("echo")).endpoints(|instance: &ServiceInstance| {
//!     let port = instance.port();
//!     Constant::new(service_fn(move |req: &'static str| async move {
//!         Ok::<_, Infallible>(format!("{port} got {req}"))
//!     }), 1)
//! });
//! let mut balance = Balance::new(endpoints);
//! let reply = balance.ready().await?.call("hello").await?;
//! assert_eq!(reply, "9001 got hello");
//! # Ok(())
//! # }
//! ```

mod backend;
mod discover;
mod error;
#[cfg(feature = "etcd")]
#[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
pub mod etcd;
mod expiry;
mod file;
mod service_registry;

pub use backend::{
    Backend, BackendError, BackendStatus, BoxFuture, BoxStream, DroppedRecord, MemoryBackend,
    Recovered, RecoveryReport, RemoteChange,
};
pub use discover::{DiscoverExt, Endpoints, MakeEndpoint, ServiceDiscover};
pub use error::RegistryError;
pub use file::{FileBackend, FileOptions, MAX_RECORD_LEN};
pub use service_registry::{RegistryBuilder, ServiceRegistry};
