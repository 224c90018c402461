//! Active health checking: HTTP, TCP, Exec, TTL and gRPC checks with
//! thresholds, written to the registry, and a [`HealthFilterLayer`] that
//! keeps unhealthy endpoints out of a balancer until they recover.
//!
//! A [`HealthChecker`] is bound to a [`ServiceRegistry`]. For each instance
//! given to [`start_health_checks`](HealthChecker::start_health_checks) it
//! runs the instance's [`CheckSpec`]s on an interval (with jitter, so a
//! thousand instances do not fire at once) and feeds every result to a pure
//! state machine ([`CheckState`]) with Consul's statuses and thresholds.
//! The instance's status, the worst of its checks', is written to the
//! registry with [`set_health_status`](crate::ServiceRegistry::set_health_status):
//! `find_services` with `healthy_only` and `discover` streams follow it, and
//! `service-healthy` / `service-unhealthy` events fire once per transition.
//!
//! Check kinds, as in Consul:
//!
//! * **HTTP** ([`CheckSpec::http`]): 2xx passing, 429 warning, anything else
//!   critical; one shared hyper client keeps connections between rounds;
//!   redirects are not followed.
//! * **TCP** ([`CheckSpec::tcp`]): a connection within the timeout.
//! * **Exec** ([`CheckSpec::exec`]): a command, no shell; exit 0 passing, 1
//!   warning, else critical; on timeout its process group is killed.
//! * **TTL** ([`CheckSpec::ttl`]): critical unless refreshed in time through
//!   [`pass_ttl`](HealthChecker::pass_ttl) / `warn_ttl` / `fail_ttl` or a
//!   registry [`heartbeat`](crate::ServiceRegistry::heartbeat).
//! * **gRPC** (`CheckSpec::grpc`, cargo feature `grpc`):
//!   `grpc.health.v1.Health/Check` through tonic.
//!
//! Every check of every instance runs from one scheduler task (a timer
//! queue), with at most
//! [`max_concurrency`](HealthCheckerConfig::max_concurrency) running at
//! once. An instance's checks stop when it leaves the registry.
//!
//! [`ServiceRegistry`]: crate::ServiceRegistry
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use fluxor_registry::{
//!     CheckSpec, HealthChecker, HealthCheckerConfig, HealthConfig, HealthStatus, Query,
//!     ServiceDefinition, ServiceRegistry,
//! };
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = ServiceRegistry::builder().build().await?;
//! let health_checker = HealthChecker::new(registry.clone(), HealthCheckerConfig {
//!     interval: Duration::from_secs(10),
//!     ..Default::default()
//! });
//! let service = registry.register(ServiceDefinition::new("worker", "127.0.0.1", 7000)).await?;
//! health_checker.start_health_checks(&service, HealthConfig {
//!     interval: Duration::from_secs(5),
//!     checks: vec![CheckSpec::ttl(Duration::from_secs(15)).name("alive")],
//!     ..Default::default()
//! })?;
//! // Checks configured, none passed yet: no traffic.
//! let healthy = Query::name("worker").healthy_only();
//! assert!(registry.find_services(&healthy).is_empty());
//!
//! health_checker.pass_ttl(service.id(), "alive", "working")?;
//! assert_eq!(registry.find_services(&healthy).len(), 1);
//!
//! // No refresh for longer than the TTL: critical.
//! tokio::time::sleep(Duration::from_secs(16)).await;
//! let report = health_checker.get_health_status(service.id()).unwrap();
//! assert_eq!(report.status, HealthStatus::Critical);
//! assert!(registry.find_services(&healthy).is_empty());
//! # Ok(())
//! # }
//! ```

mod checker;
mod config;
mod error;
mod exec;
mod filter;
#[cfg(feature = "grpc")]
mod grpc;
mod http;
mod output;
mod report;
pub mod state;
mod tcp;
mod ttl;

pub use checker::{CheckerStats, HealthChecker};
pub use config::{CheckKind, CheckSpec, HealthCheckerConfig, HealthConfig};
pub use error::HealthError;
pub use filter::{HealthFilterDiscover, HealthFilterLayer};
pub use report::{CheckReport, CheckResult, HealthReport};
pub use state::{CheckState, Thresholds};
