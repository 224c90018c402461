//! [`CircuitBreakerLayer`]: the tower face.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tower::Layer;

use super::breaker::{Circuit, CircuitBreaker};
use super::classify::{ErrorIsFailure, HttpClassifier};
use super::config::CircuitBreakerConfig;
use super::ejection::Ejection;
use super::error::ConfigError;
use super::service::CircuitBreakerService;
use crate::event::EventHub;

/// What a [`CircuitBreakerService`] does while its circuit rejects calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WhenOpen {
    /// `poll_ready` returns `Pending` and wakes the task when the circuit
    /// turns half-open (or a trial permit is freed). For endpoints under a
    /// balancer: an error from `poll_ready` would make tower's balancers
    /// drop the endpoint for good, `Pending` makes them route around it.
    #[default]
    NotReady,
    /// `poll_ready` is ready and the call fails at once with
    /// [`CircuitOpenError`](super::CircuitOpenError). For a service used
    /// alone, around a whole client.
    FailFast,
}

/// Wraps services in a circuit breaker; see the [module docs](super).
///
/// Each service it makes has a circuit of its own (keys `"{prefix}-{n}"`,
/// or the key given to [`layer_keyed`](Self::layer_keyed)), and the services
/// made by one layer (and its clones) share one ejection budget
/// ([`CircuitBreakerConfig::max_ejection_percent`]). A layer from
/// [`CircuitBreaker::layer`] instead shares one circuit of that breaker.
#[derive(Clone)]
pub struct CircuitBreakerLayer<C = ErrorIsFailure> {
    config: Arc<CircuitBreakerConfig>,
    ejection: Arc<Ejection>,
    events: Option<EventHub>,
    prefix: Arc<str>,
    next: Arc<AtomicU64>,
    shared: Option<Arc<Circuit>>,
    /// Circuits come from this breaker, by key (see
    /// [`CircuitBreaker::endpoint_layer`]).
    breaker: Option<CircuitBreaker>,
    when_open: WhenOpen,
    classify: C,
}

impl<C: fmt::Debug> fmt::Debug for CircuitBreakerLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("config", &self.config)
            .field("when_open", &self.when_open)
            .field("classify", &self.classify)
            .field("shared", &self.shared.as_ref().map(|c| c.key().clone()))
            .finish()
    }
}

impl CircuitBreakerLayer {
    /// A layer for endpoints under a balancer: an open endpoint is not
    /// ready ([`WhenOpen::NotReady`]); an `Err` is a failure. Fields out of
    /// range are replaced by the nearest valid value, with a warning; see
    /// [`try_new`](Self::try_new).
    pub fn new(config: CircuitBreakerConfig) -> Self {
        Self::build(config.sanitized_logged())
    }

    /// Like [`new`](Self::new), or the first bad field.
    pub fn try_new(config: CircuitBreakerConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self::build(config))
    }

    fn build(config: CircuitBreakerConfig) -> Self {
        Self {
            ejection: Arc::new(Ejection::new(config.max_ejection_percent)),
            config: Arc::new(config),
            events: None,
            prefix: Arc::from("endpoint"),
            next: Arc::new(AtomicU64::new(1)),
            shared: None,
            breaker: None,
            when_open: WhenOpen::NotReady,
            classify: ErrorIsFailure,
        }
    }

    /// A layer for a service used alone: calls fail fast with
    /// [`CircuitOpenError`](super::CircuitOpenError) while open
    /// ([`WhenOpen::FailFast`]).
    pub fn fail_fast(config: CircuitBreakerConfig) -> Self {
        Self::new(config).when_open(WhenOpen::FailFast)
    }

    /// Like [`fail_fast`](Self::fail_fast), or the first bad field.
    pub fn try_fail_fast(config: CircuitBreakerConfig) -> Result<Self, ConfigError> {
        Ok(Self::try_new(config)?.when_open(WhenOpen::FailFast))
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// What its services do while open.
    pub fn when_open(mut self, when_open: WhenOpen) -> Self {
        self.when_open = when_open;
        self
    }

    /// Decides failures with `classify` (a [`Classify`](super::Classify)
    /// policy or closure) instead.
    pub fn classify<C2>(self, classify: C2) -> CircuitBreakerLayer<C2> {
        CircuitBreakerLayer {
            config: self.config,
            ejection: self.ejection,
            events: self.events,
            prefix: self.prefix,
            next: self.next,
            shared: self.shared,
            breaker: self.breaker,
            when_open: self.when_open,
            classify,
        }
    }

    /// Counts an `Err` or a `5xx` response as a failure
    /// ([`HttpClassifier`]).
    pub fn http(self) -> CircuitBreakerLayer<HttpClassifier> {
        self.classify(HttpClassifier)
    }

    /// Publishes transitions on `hub` (e.g. the registry's) as well as to
    /// `tracing`.
    pub fn with_events(mut self, hub: EventHub) -> Self {
        self.events = Some(hub);
        self
    }

    /// Names the circuits `"{prefix}-1"`, `"{prefix}-2"`, … (default
    /// `endpoint`).
    pub fn key_prefix(mut self, prefix: &str) -> Self {
        self.prefix = Arc::from(prefix);
        self
    }

    /// How many circuits made by this layer are open now, and how many may
    /// be at once.
    pub fn ejected(&self) -> (usize, usize) {
        (self.ejection.open(), self.ejection.allowed())
    }

    /// Wraps `service` in a new circuit named `key` (e.g. the instance id,
    /// from [`Endpoints`](crate::Endpoints)' closure).
    pub fn layer_keyed<S>(&self, key: &str, service: S) -> CircuitBreakerService<S, C>
    where
        C: Clone,
    {
        let circuit = match (&self.shared, &self.breaker) {
            (Some(shared), _) => shared.clone(),
            (None, Some(breaker)) => breaker.circuit(key),
            (None, None) => Arc::new(Circuit::new(
                Arc::from(key),
                self.config.clone(),
                self.events.clone(),
                Some(self.ejection.clone()),
            )),
        };
        CircuitBreakerService::new(service, circuit, self.classify.clone(), self.when_open)
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreakerService<S, C>;

    fn layer(&self, service: S) -> Self::Service {
        if let Some(shared) = &self.shared {
            return CircuitBreakerService::new(
                service,
                shared.clone(),
                self.classify.clone(),
                self.when_open,
            );
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.layer_keyed(&format!("{}-{n}", self.prefix), service)
    }
}

impl CircuitBreaker {
    /// A layer for the endpoints of a `Discover` stream whose circuits are
    /// this breaker's, by endpoint key (the instance id), so the imperative
    /// API ([`get_state`](Self::get_state), [`trip`](Self::trip),
    /// [`reset`](Self::reset)) and the balanced stack see one state. An open
    /// endpoint is not ready ([`WhenOpen::NotReady`]). Apply it with
    /// [`keyed_by_discovery`](CircuitBreakerLayer::keyed_by_discovery).
    pub fn endpoint_layer(&self) -> CircuitBreakerLayer {
        let config = Arc::new(self.config().clone());
        CircuitBreakerLayer {
            ejection: Arc::new(Ejection::new(config.max_ejection_percent)),
            config,
            events: None,
            prefix: Arc::from("endpoint"),
            next: Arc::new(AtomicU64::new(1)),
            shared: None,
            breaker: Some(self.clone()),
            when_open: WhenOpen::NotReady,
            classify: ErrorIsFailure,
        }
    }

    /// A layer whose services all share this breaker's circuit `key`, so
    /// the imperative API ([`trip`](Self::trip), [`get_state`](Self::get_state),
    /// [`execute`](Self::execute)) and the tower face see one state. It fails
    /// fast while open.
    pub fn layer(&self, key: impl AsRef<str>) -> CircuitBreakerLayer {
        let key = key.as_ref();
        let config = Arc::new(self.config().clone());
        CircuitBreakerLayer {
            ejection: Arc::new(Ejection::new(config.max_ejection_percent)),
            config,
            events: None,
            prefix: Arc::from(key),
            next: Arc::new(AtomicU64::new(1)),
            shared: Some(self.circuit(key)),
            breaker: None,
            when_open: WhenOpen::FailFast,
            classify: ErrorIsFailure,
        }
    }
}
