//! [`ServiceDiscovery`]: the original module's high-level API over the
//! registry, the health checker, the load balancer and the circuit breaker.
//!
//! * [`discover`](ServiceDiscovery::discover): one healthy instance whose
//!   circuit admits a call, chosen by the strategy.
//! * [`execute`](ServiceDiscovery::execute): discover, run the operation,
//!   count the connection, record the outcome in the circuit breaker, and on
//!   failure retry on a *different* instance, with backoff, within a retry
//!   budget (tower's `TpsBudget`) so retries cannot multiply an outage.
//! * [`watch`](ServiceDiscovery::watch) /
//!   [`watch_stream`](ServiceDiscovery::watch_stream): the available set on
//!   every change, coalesced, never a stale set last.
//! * [`get_stats`](ServiceDiscovery::get_stats): instances, health, traffic
//!   and circuits per service, serializable.
//! * [`service`](ServiceDiscovery::service): the same pieces as one tower
//!   stack.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use fluxor_registry::{
//!     CircuitBreaker, CircuitBreakerConfig, HealthChecker, HealthCheckerConfig, LoadBalancer,
//!     Query, RequestContext, ServiceDefinition, ServiceDiscovery, ServiceRegistry, Strategy,
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = ServiceRegistry::builder().build().await?;
//! let health_checker = HealthChecker::new(registry.clone(), HealthCheckerConfig::default());
//! let discovery = ServiceDiscovery::new(
//!     registry.clone(),
//!     health_checker,
//!     LoadBalancer::new(Strategy::RoundRobin),
//!     CircuitBreaker::new(CircuitBreakerConfig { failure_threshold: 5, ..Default::default() }),
//! );
//! for port in [3001, 3002] {
//!     registry.register(ServiceDefinition::new("inventory-service", "127.0.0.1", port)).await?;
//! }
//! let port = discovery
//!     .execute(
//!         &Query::name("inventory-service").healthy_only(),
//!         |instance| async move { Ok::<_, std::io::Error>(instance.port()) },
//!         &RequestContext::default(),
//!     )
//!     .await?;
//! assert!(port == 3001 || port == 3002);
//! assert_eq!(discovery.get_stats().services["inventory-service"].successes, 1);
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use dashmap::DashMap;
use futures_core::Stream;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tower::Layer;
use tower::retry::budget::{Budget, TpsBudget};

use crate::balance::{LoadBalance, LoadBalancer, NoContext, RequestContext, Strategy};
use crate::circuit::{CircuitBreaker, CircuitDiscover, CircuitError, CircuitState, ErrorIsFailure};
use crate::event::SubscriptionError;
use crate::health::{HealthChecker, HealthFilterDiscover, HealthFilterLayer};
use crate::instance::{HealthStatus, InstanceId, ServiceInstance};
use crate::query::Query;
use crate::registry::{Endpoints, MakeEndpoint, ServiceDiscover, ServiceRegistry};

/// How [`ServiceDiscovery::execute`] retries.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DiscoveryConfig {
    /// The most attempts per `execute`, each on a different instance
    /// (default 3).
    pub max_attempts: u32,
    /// The wait before the first retry; doubled for each further one
    /// (default 10 ms).
    pub backoff: Duration,
    /// The longest wait between attempts (default 1 s).
    pub max_backoff: Duration,
    /// Retries allowed as a share of recent first attempts (default 0.2).
    pub retry_percent: f32,
    /// Retries allowed per second whatever the traffic (default 10).
    pub min_retries_per_sec: u32,
    /// How long a first attempt counts towards the budget (default 10 s).
    pub budget_window: Duration,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(1),
            retry_percent: 0.2,
            min_retries_per_sec: 10,
            budget_window: Duration::from_secs(10),
        }
    }
}

impl DiscoveryConfig {
    /// Sets [`max_attempts`](Self::max_attempts) (at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Sets [`backoff`](Self::backoff) and [`max_backoff`](Self::max_backoff).
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.backoff = first;
        self.max_backoff = max.max(first);
        self
    }

    /// Sets the retry budget: `retry_percent` of recent first attempts, plus
    /// `min_per_sec`, counted over `window` (1 s to 60 s).
    pub fn retry_budget(mut self, window: Duration, min_per_sec: u32, retry_percent: f32) -> Self {
        self.budget_window = window;
        self.min_retries_per_sec = min_per_sec;
        self.retry_percent = retry_percent;
        self
    }
}

/// No instance could take a request: how many matched the query, and why
/// the others were left out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "no available instance of {service}: {matched} matched, {unhealthy} unhealthy, {open} with an open circuit, {tried} already tried"
)]
pub struct NoInstances {
    /// The service asked for (`*` for a query without a name).
    pub service: String,
    /// Instances matching the query.
    pub matched: usize,
    /// Of those, unhealthy.
    pub unhealthy: usize,
    /// Of those, healthy but with an open circuit.
    pub open: usize,
    /// Of those, already tried by this call.
    pub tried: usize,
}

/// Why [`ServiceDiscovery::execute`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError<E> {
    /// No instance was available for the first attempt.
    #[error(transparent)]
    NoInstances(NoInstances),
    /// Every attempt failed; `last` is the last attempt's error.
    #[error("failed after {attempts} attempts: {last}")]
    Failed {
        /// How many attempts ran.
        attempts: u32,
        /// The last error.
        last: E,
        /// Why it stopped retrying.
        stopped: StopReason,
    },
}

/// Why [`ServiceDiscovery::execute`] stopped retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// It made [`DiscoveryConfig::max_attempts`] attempts.
    MaxAttempts,
    /// The retry budget was spent: retries would have multiplied an outage.
    BudgetExhausted,
    /// No instance it had not tried yet was available.
    NoOtherInstance,
}

impl<E> ExecuteError<E> {
    /// The last attempt's error, if an attempt ran.
    pub fn into_last(self) -> Option<E> {
        match self {
            ExecuteError::Failed { last, .. } => Some(last),
            ExecuteError::NoInstances(_) => None,
        }
    }
}

/// Per-service traffic counters, shared by `execute` and `service`.
#[derive(Debug, Default)]
#[doc(hidden)]
pub struct Counters {
    requests: AtomicU64,
    successes: AtomicU64,
    failures: AtomicU64,
    retries: AtomicU64,
    rejections: AtomicU64,
}

/// The high-level API; see the [module docs](self). Cheap to clone.
#[derive(Clone)]
pub struct ServiceDiscovery {
    inner: Arc<Inner>,
}

struct Inner {
    registry: ServiceRegistry,
    health: HealthChecker,
    balancer: LoadBalancer,
    breaker: CircuitBreaker,
    config: DiscoveryConfig,
    /// One retry budget per service, so a storm on one cannot spend
    /// another's retries.
    budgets: DashMap<String, Arc<TpsBudget>>,
    counters: DashMap<String, Arc<Counters>>,
}

impl fmt::Debug for ServiceDiscovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceDiscovery")
            .field("registry", &self.inner.registry)
            .field("strategy", &self.inner.balancer.strategy())
            .field("config", &self.inner.config)
            .finish()
    }
}

/// Decrements the connection count when the attempt ends, also on cancel.
struct Connection<'a> {
    balancer: &'a LoadBalancer,
    id: InstanceId,
}

impl Drop for Connection<'_> {
    fn drop(&mut self) {
        self.balancer.update_connections(&self.id, -1);
    }
}

impl ServiceDiscovery {
    /// Combines the four pieces. The circuit breaker is attached to the
    /// registry (its transitions become registry events and a deregistered
    /// instance's circuit is dropped) when a tokio runtime is running.
    pub fn new(
        registry: ServiceRegistry,
        health_checker: HealthChecker,
        load_balancer: LoadBalancer,
        circuit_breaker: CircuitBreaker,
    ) -> Self {
        let breaker = match circuit_breaker.clone().attach(&registry) {
            Ok(attached) => attached,
            Err(e) => {
                tracing::warn!(target: "fluxor_registry::discovery", error = %e, "circuit breaker not attached to the registry");
                circuit_breaker.with_events(registry.events())
            }
        };
        Self::build(
            registry,
            health_checker,
            load_balancer,
            breaker,
            DiscoveryConfig::default(),
        )
    }

    fn build(
        registry: ServiceRegistry,
        health: HealthChecker,
        balancer: LoadBalancer,
        breaker: CircuitBreaker,
        config: DiscoveryConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                registry,
                health,
                balancer,
                breaker,
                config,
                budgets: DashMap::new(),
                counters: DashMap::new(),
            }),
        }
    }

    /// The same pieces with another retry configuration (fresh budgets).
    pub fn with_config(self, config: DiscoveryConfig) -> Self {
        let i = &self.inner;
        Self::build(
            i.registry.clone(),
            i.health.clone(),
            i.balancer.clone(),
            i.breaker.clone(),
            config,
        )
    }

    /// The registry.
    pub fn registry(&self) -> &ServiceRegistry {
        &self.inner.registry
    }

    /// The health checker.
    pub fn health_checker(&self) -> &HealthChecker {
        &self.inner.health
    }

    /// The load balancer.
    pub fn load_balancer(&self) -> &LoadBalancer {
        &self.inner.balancer
    }

    /// The circuit breaker.
    pub fn circuit_breaker(&self) -> &CircuitBreaker {
        &self.inner.breaker
    }

    fn counters(&self, service: &str) -> Arc<Counters> {
        if let Some(c) = self.inner.counters.get(service) {
            return c.clone();
        }
        self.inner
            .counters
            .entry(service.to_owned())
            .or_default()
            .clone()
    }

    fn budget(&self, service: &str) -> Arc<TpsBudget> {
        if let Some(b) = self.inner.budgets.get(service) {
            return b.clone();
        }
        let config = &self.inner.config;
        let window = config
            .budget_window
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
        let percent = if config.retry_percent.is_finite() {
            config.retry_percent.clamp(0.0, 1000.0)
        } else {
            0.0
        };
        let make = || Arc::new(TpsBudget::new(window, config.min_retries_per_sec, percent));
        self.inner
            .budgets
            .entry(service.to_owned())
            .or_insert_with(make)
            .clone()
    }

    fn admits(&self, instance: &ServiceInstance) -> bool {
        self.inner.breaker.get_state(instance.id().as_str()) != CircuitState::Open
    }

    /// The instances matching `query` that are healthy and whose circuit
    /// admits calls (closed or half-open), ordered by id.
    pub fn get_available_services(&self, query: &Query) -> Vec<ServiceInstance> {
        let mut found = self.inner.registry.find_services(query);
        found.retain(|i| i.is_healthy() && self.admits(i));
        found
    }

    fn available_except(
        &self,
        query: &Query,
        tried: &HashSet<InstanceId>,
    ) -> Result<Vec<ServiceInstance>, NoInstances> {
        let all = self.inner.registry.find_services(query);
        let (mut unhealthy, mut open, mut skipped) = (0, 0, 0);
        let matched = all.len();
        let available: Vec<ServiceInstance> = all
            .into_iter()
            .filter(|i| {
                if !i.is_healthy() {
                    unhealthy += 1;
                    false
                } else if !self.admits(i) {
                    open += 1;
                    false
                } else if tried.contains(i.id()) {
                    skipped += 1;
                    false
                } else {
                    true
                }
            })
            .collect();
        if available.is_empty() {
            return Err(NoInstances {
                service: query.service_name().unwrap_or("*").to_owned(),
                matched,
                unhealthy,
                open,
                tried: skipped,
            });
        }
        Ok(available)
    }

    /// One healthy instance matching `query` whose circuit admits a call,
    /// chosen by the load balancer's strategy.
    pub async fn discover(
        &self,
        query: &Query,
        ctx: &RequestContext,
    ) -> Result<ServiceInstance, NoInstances> {
        let available = self.available_except(query, &HashSet::new())?;
        self.inner
            .balancer
            .select_instance(&available, ctx)
            .ok_or_else(|| NoInstances {
                service: query.service_name().unwrap_or("*").to_owned(),
                matched: 0,
                unhealthy: 0,
                open: 0,
                tried: 0,
            })
    }

    /// Runs `operation` on an instance chosen by [`discover`](Self::discover):
    /// counts the connection while it runs (also when the call is
    /// cancelled), records its outcome in the circuit breaker and, when it
    /// fails, retries on an instance not yet tried, up to
    /// [`DiscoveryConfig::max_attempts`], with exponential backoff, while
    /// the retry budget allows.
    pub async fn execute<T, E, F, Fut>(
        &self,
        query: &Query,
        operation: F,
        ctx: &RequestContext,
    ) -> Result<T, ExecuteError<E>>
    where
        F: Fn(ServiceInstance) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let inner = &self.inner;
        let service = query.service_name().unwrap_or("*");
        let counters = self.counters(service);
        let budget = self.budget(service);
        let mut tried: HashSet<InstanceId> = HashSet::new();
        let mut attempts = 0u32;
        // The last failure; while `retry` is set it has not been retried yet.
        let mut last: Option<E> = None;
        let mut retry = false;
        budget.deposit();
        loop {
            if retry {
                retry = false;
                // Charge and wait once per retry, before choosing, so the
                // choice reflects the state after the wait.
                if !budget.withdraw()
                    && let Some(last) = last
                {
                    return Err(ExecuteError::Failed {
                        attempts,
                        last,
                        stopped: StopReason::BudgetExhausted,
                    });
                }
                counters.retries.fetch_add(1, Ordering::Relaxed);
                let factor = 1u32 << (attempts.saturating_sub(1)).min(16);
                let wait = inner
                    .config
                    .backoff
                    .saturating_mul(factor)
                    .min(inner.config.max_backoff);
                tokio::time::sleep(wait).await;
            }
            let available = match self.available_except(query, &tried) {
                Ok(available) => available,
                Err(none) => {
                    return Err(match last {
                        None => {
                            counters.rejections.fetch_add(1, Ordering::Relaxed);
                            ExecuteError::NoInstances(none)
                        }
                        Some(last) => ExecuteError::Failed {
                            attempts,
                            last,
                            stopped: StopReason::NoOtherInstance,
                        },
                    });
                }
            };
            // `available` is never empty here, so a choice is always made.
            let Some(instance) = inner.balancer.select_instance(&available, ctx) else {
                return Err(ExecuteError::NoInstances(NoInstances {
                    service: query.service_name().unwrap_or("*").to_owned(),
                    matched: 0,
                    unhealthy: 0,
                    open: 0,
                    tried: tried.len(),
                }));
            };
            let id = instance.id().clone();
            tried.insert(id.clone());
            inner.balancer.update_connections(&id, 1);
            let connection = Connection {
                balancer: &inner.balancer,
                id: id.clone(),
            };
            let started = Instant::now();
            let outcome = inner
                .breaker
                .execute(id.as_str(), || operation(instance))
                .await;
            drop(connection);
            match outcome {
                Ok(value) => {
                    inner.balancer.record_response_time(&id, started.elapsed());
                    counters.requests.fetch_add(1, Ordering::Relaxed);
                    counters.successes.fetch_add(1, Ordering::Relaxed);
                    return Ok(value);
                }
                Err(CircuitError::Open { .. }) => {
                    // Opened between the check and the call: the operation
                    // did not run. Choose another instance at once.
                    counters.rejections.fetch_add(1, Ordering::Relaxed);
                }
                Err(CircuitError::Inner(e)) => {
                    attempts += 1;
                    counters.requests.fetch_add(1, Ordering::Relaxed);
                    counters.failures.fetch_add(1, Ordering::Relaxed);
                    if attempts >= inner.config.max_attempts {
                        return Err(ExecuteError::Failed {
                            attempts,
                            last: e,
                            stopped: StopReason::MaxAttempts,
                        });
                    }
                    last = Some(e);
                    retry = true;
                }
            }
        }
    }

    /// Calls `callback` with the available instances of `query` (as
    /// [`get_available_services`](Self::get_available_services)) now and
    /// after every change to them: registrations, deregistrations, health
    /// and circuit transitions (also an open circuit turning half-open when
    /// its reset timeout passes). Changes that come in bursts are coalesced;
    /// the last call always has the current set. Stops when the handle is
    /// dropped or [`unwatch`](WatchHandle::unwatch)ed.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as `tokio::spawn` does.
    pub fn watch<F>(&self, query: &Query, callback: F) -> WatchHandle
    where
        F: Fn(&[ServiceInstance]) + Send + Sync + 'static,
    {
        let (mut rx, feeder) = self.watch_channel(query);
        let task = tokio::spawn(async move {
            loop {
                let current = rx.borrow_and_update().clone();
                callback(&current);
                if rx.changed().await.is_err() {
                    return;
                }
            }
        });
        WatchHandle {
            tasks: vec![feeder, task.abort_handle()],
        }
    }

    /// The available instances of `query` as a `Stream`: the current set
    /// first, then the set after each change (coalesced: a slow reader gets
    /// the latest set, never a stale one). Dropping it stops the watch.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as `tokio::spawn` does.
    pub fn watch_stream(&self, query: &Query) -> WatchStream {
        let (rx, feeder) = self.watch_channel(query);
        WatchStream {
            inner: tokio_stream::wrappers::WatchStream::new(rx),
            handle: WatchHandle {
                tasks: vec![feeder],
            },
        }
    }

    fn watch_channel(
        &self,
        query: &Query,
    ) -> (watch::Receiver<Arc<Vec<ServiceInstance>>>, AbortHandle) {
        // Subscribe before the first read, so no change falls between them.
        let mut events = self.inner.registry.subscribe();
        let initial = Arc::new(self.get_available_services(query));
        let (tx, rx) = watch::channel(initial);
        let this = self.clone();
        let query = query.clone();
        let feeder = tokio::spawn(async move {
            loop {
                // An open circuit turns half-open on a timer, with no event:
                // wake for the earliest one too.
                let reopen = this
                    .inner
                    .registry
                    .find_services(&query)
                    .iter()
                    .filter_map(|i| this.inner.breaker.reopens_at(i.id().as_str()))
                    .min();
                let event = match reopen {
                    Some(at) => tokio::select! {
                        event = events.recv() => Some(event),
                        _ = tokio::time::sleep_until(at) => None,
                    },
                    None => Some(events.recv().await),
                };
                if let Some(Err(SubscriptionError::Closed)) = event {
                    return;
                }
                // Coalesce what else is waiting, then read the set once.
                while let Ok(Some(_)) | Err(SubscriptionError::Lagged { .. }) = events.try_recv() {}
                let now = this.get_available_services(&query);
                let changed = tx.send_if_modified(|seen| {
                    let same = seen.len() == now.len()
                        && seen
                            .iter()
                            .zip(&now)
                            .all(|(a, b)| a.id() == b.id() && a.definition() == b.definition());
                    if !same {
                        *seen = Arc::new(now);
                    }
                    !same
                });
                if !changed && tx.is_closed() {
                    return;
                }
            }
        });
        (rx, feeder.abort_handle())
    }

    /// A snapshot of instances, health, traffic and circuits per service,
    /// and the strategy.
    pub fn get_stats(&self) -> DiscoveryStats {
        let inner = &self.inner;
        let mut services: BTreeMap<String, ServiceStats> = BTreeMap::new();
        for instance in inner.registry.get_all_services() {
            let s = services.entry(instance.name().to_owned()).or_default();
            s.instances += 1;
            *s.health.entry(instance.health()).or_default() += 1;
            let state = inner.breaker.get_state(instance.id().as_str());
            s.circuits.insert(instance.id().to_string(), state.as_str());
        }
        for entry in inner.counters.iter() {
            let s = services.entry(entry.key().clone()).or_default();
            let c = entry.value();
            s.requests = c.requests.load(Ordering::Relaxed);
            s.successes = c.successes.load(Ordering::Relaxed);
            s.failures = c.failures.load(Ordering::Relaxed);
            s.retries = c.retries.load(Ordering::Relaxed);
            s.rejections = c.rejections.load(Ordering::Relaxed);
        }
        DiscoveryStats {
            strategy: inner.balancer.strategy(),
            services,
        }
    }

    /// The ready-made tower stack for `query`, the same as composing by
    /// hand:
    ///
    /// ```text
    /// ServiceBuilder::new()
    ///     .layer(LoadBalanceLayer::new(strategy).weights(registry))  // this balancer's strategy
    ///     .layer(circuit_breaker.endpoint_layer().keyed_by_discovery()) // this breaker's circuits
    ///     .service(HealthFilterLayer::new(health_checker)
    ///         .layer(registry.discover(query))
    ///         .endpoints(make_endpoint))
    /// ```
    ///
    /// Endpoints are filtered by health, wrapped in this breaker's circuit
    /// for their instance (an open one is not ready, so the balancer routes
    /// around it) and balanced with this balancer's strategy, weighted by the
    /// registry.
    pub fn service<M>(&self, query: Query, make_endpoint: M) -> DiscoveryService<M>
    where
        M: MakeEndpoint,
    {
        let inner = &self.inner;
        let counters = self.counters(query.service_name().unwrap_or("*"));
        let healthy =
            HealthFilterLayer::new(inner.health.clone()).layer(inner.registry.discover(query));
        let endpoints = Endpoints::new(healthy, make_endpoint);
        let guarded = inner
            .breaker
            .endpoint_layer()
            .keyed_by_discovery()
            .layer(endpoints);
        DiscoveryService {
            inner: inner
                .balancer
                .layer()
                .weights(inner.registry.clone())
                .layer(guarded),
            counters,
        }
    }
}

type Stack<M> = LoadBalance<
    CircuitDiscover<
        Endpoints<HealthFilterDiscover<ServiceDiscover, ServiceInstance>, M>,
        ErrorIsFailure,
    >,
    NoContext,
    ServiceRegistry,
>;

/// The stack [`ServiceDiscovery::service`] builds: the balanced service,
/// counting its traffic into [`ServiceDiscovery::get_stats`].
pub struct DiscoveryService<M: MakeEndpoint> {
    inner: Stack<M>,
    counters: Arc<Counters>,
}

impl<M: MakeEndpoint> fmt::Debug for DiscoveryService<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiscoveryService")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<M, Req> tower::Service<Req> for DiscoveryService<M>
where
    M: MakeEndpoint,
    Stack<M>: tower::Service<Req, Error = tower::BoxError>,
{
    type Response = <Stack<M> as tower::Service<Req>>::Response;
    type Error = tower::BoxError;
    type Future = CountedFuture<<Stack<M> as tower::Service<Req>>::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let ready = self.inner.poll_ready(cx);
        if let Poll::Ready(Err(_)) = &ready {
            self.counters.rejections.fetch_add(1, Ordering::Relaxed);
        }
        ready
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        CountedFuture {
            inner: self.inner.call(req),
            counters: self.counters.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of a [`DiscoveryService`]: counts the outcome.
    pub struct CountedFuture<F> {
        #[pin]
        inner: F,
        counters: Arc<Counters>,
    }
}

impl<F> fmt::Debug for CountedFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CountedFuture").finish_non_exhaustive()
    }
}

impl<F, T, E> Future for CountedFuture<F>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = std::task::ready!(this.inner.poll(cx));
        let counter = if output.is_ok() {
            &this.counters.successes
        } else {
            &this.counters.failures
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Poll::Ready(output)
    }
}

/// Stops a [`ServiceDiscovery::watch`] when dropped or unwatched.
#[derive(Debug)]
#[must_use = "the watch stops when the handle is dropped"]
pub struct WatchHandle {
    tasks: Vec<AbortHandle>,
}

impl WatchHandle {
    /// Stops the watch: the callback is not called again.
    pub fn unwatch(self) {
        drop(self);
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The available instances of a query, as a `Stream`; from
/// [`ServiceDiscovery::watch_stream`].
pub struct WatchStream {
    inner: tokio_stream::wrappers::WatchStream<Arc<Vec<ServiceInstance>>>,
    handle: WatchHandle,
}

impl fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchStream")
            .field("handle", &self.handle)
            .finish()
    }
}

impl Stream for WatchStream {
    type Item = Arc<Vec<ServiceInstance>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

/// What [`ServiceDiscovery::get_stats`] reports.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DiscoveryStats {
    /// The load balancer's strategy.
    pub strategy: Strategy,
    /// Per service name.
    pub services: BTreeMap<String, ServiceStats>,
}

/// One service's figures in [`DiscoveryStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ServiceStats {
    /// Registered instances.
    pub instances: usize,
    /// Instances per health status.
    pub health: BTreeMap<HealthStatus, usize>,
    /// Attempts made through [`ServiceDiscovery::execute`] and calls made
    /// through [`ServiceDiscovery::service`].
    pub requests: u64,
    /// Calls that succeeded.
    pub successes: u64,
    /// Attempts that failed.
    pub failures: u64,
    /// Attempts that were retries.
    pub retries: u64,
    /// Calls turned away: no instance, or an open circuit.
    pub rejections: u64,
    /// Each instance's circuit state (`"closed"`, `"open"`, `"half-open"`).
    pub circuits: BTreeMap<String, &'static str>,
}
