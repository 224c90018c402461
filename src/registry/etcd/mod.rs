//! A registry shared through etcd: [`EtcdBackend`] (cargo feature `etcd`).
//!
//! Every registry built with the same endpoints and prefix — in this process
//! or on another machine — sees the same instances.
//!
//! # Key schema
//!
//! Each instance is one key, `{prefix}/services/{name}/{id}`, whose value is
//! the JSON form of [`ServiceInstance`](crate::ServiceInstance): the fields of
//! its [`ServiceDefinition`](crate::ServiceDefinition) (`id`, `name`,
//! `version`, `host`, `port`, `protocol`, `tags`, `metadata`, `weight`,
//! `ttl_ms`) plus `registered_at_ms`, `last_heartbeat_ms` and `health`. Only
//! `host` and `port` are required: `id` and `name` come from the key, and
//! must agree with it when given. The key is attached to a lease whose TTL is
//! the instance's TTL rounded up to whole seconds, or
//! [`EtcdOptions::default_lease_ttl`]. A value that does not decode is
//! logged, counted in [`BackendStatus::rejected`] and skipped.
//!
//! # How it works
//!
//! * `register` grants a lease and puts the key; `heartbeat` refreshes the
//!   lease (it never rewrites the key); the backend itself keeps alive the
//!   leases of instances registered without a TTL; `deregister` deletes the
//!   key and revokes the lease. Liveness belongs to the lease: the registry
//!   does not expire these instances on its own, etcd does.
//! * The registry's in-process index is the cache: one range read fills it,
//!   then a watch from the read's revision + 1 follows every change, so
//!   nothing falls between the two. Reads never leave the process.
//! * When the watch breaks (etcd restarts, the connection drops, or HTTP/2
//!   keep-alive finds etcd frozen) it is opened again from the last revision
//!   seen + 1, so no change is lost or seen twice. If that revision was
//!   compacted meanwhile, a full read replaces the cache and only the real
//!   differences become changes and events.
//! * Meanwhile reads serve the last known state, and
//!   [`ServiceRegistry::backend_status`](crate::ServiceRegistry::backend_status)
//!   says since when it may be stale.
//! * When one of this process's instances loses its lease while it is alive
//!   (an outage outlasted the lease, or someone revoked or deleted it), it is
//!   put again under a new lease, without any event here.
//! * Removals made elsewhere are reported with reason
//!   [`Requested`](crate::DeregisterReason::Requested) (etcd does not say
//!   whether a key was deleted or its lease ran out); the expiry of this
//!   process's own instances with reason
//!   [`Expired`](crate::DeregisterReason::Expired).
//!
//! [`BackendStatus::rejected`]: crate::registry::BackendStatus::rejected
//!
//! # Examples
//!
//! ```no_run
//! use std::time::Duration;
//! use fluxor_registry::{Query, ServiceDefinition, ServiceRegistry};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = ServiceRegistry::builder()
//!     .etcd(["http://127.0.0.1:2379"])
//!     .prefix("/fluxor")
//!     .build()
//!     .await?;
//! let me = registry
//!     .register(ServiceDefinition::new("orders", "127.0.0.1", 8080).ttl(Duration::from_secs(5)))
//!     .await?;
//! registry.heartbeat(me.id()).await?; // refreshes the lease
//!
//! // Served from the local cache, filled and followed through a watch.
//! let orders = registry.find_services(&Query::name("orders"));
//! assert!(!orders.is_empty());
//! assert!(registry.backend_status().stale_since.is_none());
//! # Ok(())
//! # }
//! ```

mod backend;
mod keys;

pub use backend::{EtcdBackend, EtcdError, EtcdOptions};
