//! Circuit breaking: stop calling what keeps failing, try it again later.
//!
//! One state machine per circuit, with two faces: the imperative
//! [`CircuitBreaker`] (the original module's `execute` / `trip` / `reset` /
//! `get_state`, per key) and the tower [`CircuitBreakerLayer`].
//!
//! # The state machine
//!
//! * **Closed**: calls flow and their outcomes are counted. The circuit
//!   opens after [`failure_threshold`] failures in a row (the original
//!   contract), or — with a [`RateRule`] — when the failure or slow-call rate
//!   over a sliding window of calls or seconds crosses a threshold, once the
//!   window holds a minimum number of calls (resilience4j's model).
//! * **Open**: calls are rejected for [`reset_timeout`], which grows with
//!   each trip in a row when [`backoff`] is set.
//! * **Half-open**: exactly [`half_open_max_calls`] trial calls are admitted
//!   in all, however many callers race for them (resilience4j's permitted
//!   calls in half-open state); [`success_threshold`] successes close the
//!   circuit, one failure reopens it. A trial whose future is dropped, or
//!   whose outcome is [`Outcome::Ignore`], gives its permit back.
//! * [`CircuitBreaker::trip`] holds a circuit open until
//!   [`CircuitBreaker::reset`].
//!
//! Sources: the consecutive-failure rule with an exponentially growing
//! probation is linkerd2-proxy's failure accrual (`consecutive_failures`,
//! where a pure decision drives a separate readiness gate, as here); the
//! rate rules, slow calls and half-open permits are resilience4j's; the
//! ejection cap is Envoy's outlier detection `max_ejection_percent`.
//!
//! Every transition is an [`Event`](crate::Event) —
//! `circuit-breaker-open`, `circuit-breaker-half-open`,
//! `circuit-breaker-closed` — on the registry's hub when one is attached
//! ([`CircuitBreaker::attach`], [`CircuitBreakerLayer::with_events`]), and
//! a `tracing` event always. A circuit tripped by hand reports
//! `retry_after: Duration::MAX` in its event (it waits for a reset).
//!
//! Keys: a [`CircuitBreaker`] holds one circuit per key (an instance id,
//! say) in a map bounded by [`max_keys`]; attached to a registry it drops
//! the circuit of a deregistered instance. A [`CircuitBreakerLayer`] gives
//! each service it wraps a circuit of its own, which goes away with the
//! service (a balancer drops it when discovery removes the endpoint); it is
//! named `endpoint-1`, `endpoint-2`, …; applied to the whole stream with
//! [`CircuitBreakerLayer::keyed_by_discovery`] instead of per endpoint, it
//! is named by the instance id.
//!
//! What is a failure is a [`Classify`] policy: by default an `Err`
//! ([`ErrorIsFailure`]); [`HttpClassifier`] also counts `5xx` responses; any
//! closure `Fn(&Result<T, E>, Duration) -> Outcome` can count a 429, ignore
//! a 404 or fail a slow call.
//!
//! # Under a balancer, or alone
//!
//! Applied **per endpoint** (with [`EndpointLayer`](crate::EndpointLayer),
//! as endpoints come out of the registry's `Discover` stream), an open
//! endpoint's `poll_ready` returns `Pending` ([`WhenOpen::NotReady`]) and
//! arms a timer that wakes the balancer when the circuit turns half-open.
//! The balancer routes around it meanwhile; an error would have evicted the
//! endpoint for good. `poll_ready` reserves the call (a half-open trial
//! permit included), `call` spends it. At most
//! [`max_ejection_percent`] of one layer's endpoints may be open at once
//! (Envoy's outlier ejection cap; at least one always may).
//!
//! Used **alone** around a whole client ([`CircuitBreakerLayer::fail_fast`],
//! [`WhenOpen::FailFast`]), a call fails at once with [`CircuitOpenError`].
//!
//! [`failure_threshold`]: CircuitBreakerConfig::failure_threshold
//! [`reset_timeout`]: CircuitBreakerConfig::reset_timeout
//! [`backoff`]: CircuitBreakerConfig::backoff
//! [`half_open_max_calls`]: CircuitBreakerConfig::half_open_max_calls
//! [`success_threshold`]: CircuitBreakerConfig::success_threshold
//! [`max_ejection_percent`]: CircuitBreakerConfig::max_ejection_percent
//! [`max_keys`]: CircuitBreakerConfig::max_keys
//!
//! # Examples
//!
//! The imperative face, on paused time:
//!
//! ```
//! use std::time::Duration;
//! use fluxor_registry::{CircuitBreaker, CircuitBreakerConfig, CircuitError, CircuitState};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let breaker = CircuitBreaker::try_new(CircuitBreakerConfig {
//!     failure_threshold: 2,
//!     reset_timeout: Duration::from_secs(30),
//!     ..Default::default()
//! })?;
//! let down = || async { Err::<u32, _>(std::io::Error::other("connection refused")) };
//! for _ in 0..2 {
//!     let r = breaker.execute("inventory", down).await;
//!     assert!(matches!(r, Err(CircuitError::Inner(_))));
//! }
//! assert_eq!(breaker.get_state("inventory"), CircuitState::Open);
//! let r = breaker.execute("inventory", || async { Ok::<_, std::io::Error>(1) }).await;
//! assert!(matches!(r, Err(CircuitError::Open { retry_after: Some(_), .. })));
//!
//! tokio::time::advance(Duration::from_secs(30)).await;
//! assert_eq!(breaker.get_state("inventory"), CircuitState::HalfOpen);
//! let value = breaker.execute("inventory", || async { Ok::<_, std::io::Error>(1) }).await?;
//! assert_eq!(value, 1);
//! assert_eq!(breaker.get_state("inventory"), CircuitState::Closed);
//! # Ok(())
//! # }
//! ```
//!
//! Per endpoint under tower's balancer, fed by the registry:
//!
//! ```
//! use std::time::Duration;
//! use fluxor_registry::{
//!     CircuitBreakerConfig, CircuitBreakerLayer, EndpointLayer, Query, ServiceDefinition,
//!     ServiceInstance, ServiceRegistry,
//! };
//! use tower::{Service, ServiceBuilder, ServiceExt, balance::p2c::Balance, load::Constant, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower::BoxError> {
//! let registry = ServiceRegistry::builder().build().await?;
//! registry.register(ServiceDefinition::new("echo", "127.0.0.1", 9001)).await?;
//!
//! let breaker = CircuitBreakerLayer::try_new(CircuitBreakerConfig {
//!     failure_threshold: 3,
//!     reset_timeout: Duration::from_secs(10),
//!     max_ejection_percent: 50,
//!     ..Default::default()
//! })?
//! .with_events(registry.events());
//! let endpoints = ServiceBuilder::new()
//!     .layer(EndpointLayer::new(breaker))
//!     .service(registry.discover(Query::name("echo")).endpoints(|i: &ServiceInstance| {
//!         let port = i.port();
//!         service_fn(move |_: ()| async move { Ok::<_, std::io::Error>(port) })
//!     }));
//! let endpoints = ServiceBuilder::new()
//!     .layer(EndpointLayer::new(tower::layer::layer_fn(|s| Constant::new(s, 1))))
//!     .service(endpoints);
//! let mut balance = Balance::new(endpoints);
//! assert_eq!(balance.ready().await?.call(()).await?, 9001);
//! # Ok(())
//! # }
//! ```
//!
//! Alone, around a whole client, failing fast:
//!
//! ```
//! use std::time::Duration;
//! use fluxor_registry::{CircuitBreakerConfig, CircuitBreakerLayer, CircuitOpenError};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), tower::BoxError> {
//! let config = CircuitBreakerConfig { failure_threshold: 1, ..Default::default() };
//! let mut client = ServiceBuilder::new()
//!     .layer(CircuitBreakerLayer::try_fail_fast(config)?.http())
//!     .service(service_fn(|_: ()| async {
//!         let mut response = http::Response::new(());
//!         *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
//!         Ok::<_, std::io::Error>(response)
//!     }));
//! let first = client.ready().await?.call(()).await?;
//! assert_eq!(first.status(), 503); // a failure: the circuit opens
//! let second = client.ready().await?.call(()).await.unwrap_err();
//! let open = second.downcast_ref::<CircuitOpenError>().expect("rejected by the circuit");
//! assert_eq!(open.retry_after(), Some(Duration::from_secs(30)));
//! # Ok(())
//! # }
//! ```

mod breaker;
mod classify;
mod config;
mod discover;
mod ejection;
mod error;
mod future;
mod layer;
mod machine;
mod service;

pub use breaker::{AttachError, CircuitBreaker};
pub use classify::{Classify, ErrorIsFailure, HttpClassifier, Outcome};
pub use config::{Backoff, CircuitBreakerConfig, MAX_OPEN, RateRule, SlidingWindow};
pub use discover::{CircuitDiscover, CircuitDiscoverLayer};
pub use error::{CircuitError, CircuitOpenError, ConfigError, NotReadyError};
pub use future::ResponseFuture;
pub use layer::{CircuitBreakerLayer, WhenOpen};
pub use machine::CircuitState;
pub use service::CircuitBreakerService;
