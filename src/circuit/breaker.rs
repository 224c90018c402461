//! [`CircuitBreaker`], the imperative face, and [`Circuit`], the gate around
//! one state machine that both faces share.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Waker;
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::classify::{Classify, ErrorIsFailure, Outcome};
use super::config::CircuitBreakerConfig;
use super::ejection::Ejection;
use super::error::{CircuitError, CircuitOpenError, ConfigError};
use super::machine::{Admission, CircuitState, Hint, Machine, Ticket, Transition};
use crate::ServiceRegistry;
use crate::event::{Event, EventHub};

// === impl Circuit ===

/// One circuit: the state machine behind a lock of its own, the tasks
/// waiting for it, and where its transitions are published.
pub(crate) struct Circuit {
    key: Arc<str>,
    /// The machine's [`Hint`], refreshed under the lock after every change:
    /// closed-state calls are admitted, and their successes recorded, from
    /// it alone, without the lock.
    hint: AtomicU64,
    slow_call_duration: Option<Duration>,
    state: Mutex<Guarded>,
    events: Option<EventHub>,
    ejection: Option<Arc<Ejection>>,
}

struct Guarded {
    machine: Machine,
    /// Tasks to wake on the next transition or freed trial permit.
    waiters: Vec<Waker>,
}

/// Why [`Circuit::acquire`] refused a call.
#[derive(Debug, Clone)]
pub(crate) struct Refused {
    pub(crate) key: Arc<str>,
    pub(crate) retry_after: Option<Duration>,
    /// When the circuit turns half-open, if it is open on a timer.
    pub(crate) reopens_at: Option<Instant>,
}

impl fmt::Debug for Circuit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Circuit")
            .field("key", &self.key)
            .field("state", &self.state(Instant::now()))
            .finish()
    }
}

impl Circuit {
    pub(crate) fn new(
        key: Arc<str>,
        config: Arc<CircuitBreakerConfig>,
        events: Option<EventHub>,
        ejection: Option<Arc<Ejection>>,
    ) -> Self {
        if let Some(e) = &ejection {
            e.join();
        }
        let machine = Machine::new(config.clone());
        Self {
            key,
            hint: AtomicU64::new(machine.hint().0),
            slow_call_duration: config.slow_call_duration,
            state: Mutex::new(Guarded {
                machine,
                waiters: Vec::new(),
            }),
            events,
            ejection,
        }
    }

    pub(crate) fn key(&self) -> &Arc<str> {
        &self.key
    }

    fn lock(&self) -> MutexGuard<'_, Guarded> {
        // Nothing panics under this lock; a poisoned lock still holds a
        // consistent machine.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn state(&self, now: Instant) -> CircuitState {
        self.lock().machine.state(now)
    }

    /// When this circuit, open on a timer, turns half-open.
    pub(crate) fn reopens_at(&self) -> Option<Instant> {
        if Hint(self.hint.load(Ordering::Acquire)).admit().is_some() {
            return None;
        }
        self.lock().machine.reopens_at()
    }

    /// The state now; a closed circuit answers from its hint, without the
    /// lock or the clock.
    pub(crate) fn current_state(&self) -> CircuitState {
        if Hint(self.hint.load(Ordering::Acquire)).admit().is_some() {
            return CircuitState::Closed;
        }
        self.state(Instant::now())
    }

    fn is_closed(&self) -> bool {
        self.lock().machine.is_closed()
    }

    /// Asks for one call. When refused and `waker` is given, the task is
    /// woken on the next transition or freed trial permit; an open circuit
    /// turns half-open lazily, so waiting for `reopens_at` is the caller's.
    pub(crate) fn acquire(
        self: Arc<Self>,
        timed: bool,
        waker: Option<&Waker>,
    ) -> Result<Permit, Refused> {
        let timed = timed || self.slow_call_duration.is_some();
        if let Some(ticket) = Hint(self.hint.load(Ordering::Acquire)).admit() {
            return Ok(Permit::new(self, ticket, timed));
        }
        let mut guard = self.lock();
        let (admission, transition) = guard.machine.acquire(Instant::now);
        let result = match admission {
            Admission::Admitted(ticket) => Ok(Permit::new(self.clone(), ticket, timed)),
            Admission::Rejected { retry_after } => {
                let reopens_at = guard.machine.reopens_at();
                // Registered even when open on a timer: a reset by hand
                // must wake it too.
                if let Some(waker) = waker
                    && !guard.waiters.iter().any(|w| w.will_wake(waker))
                {
                    guard.waiters.push(waker.clone());
                }
                Err(Refused {
                    key: self.key.clone(),
                    retry_after,
                    reopens_at,
                })
            }
        };
        self.refresh_hint(&guard);
        let wake = transition.map(|t| {
            // Half-open only: the ejection count is unchanged.
            self.publish(t);
            std::mem::take(&mut guard.waiters)
        });
        drop(guard);
        wake.into_iter().flatten().for_each(Waker::wake);
        result
    }

    fn refresh_hint(&self, guard: &Guarded) {
        self.hint.store(guard.machine.hint().0, Ordering::Release);
    }

    fn finish(&self, ticket: Ticket, outcome: Outcome, slow: bool) {
        if outcome == Outcome::Success
            && !slow
            && Hint(self.hint.load(Ordering::Acquire)).success_is_noop(ticket)
        {
            return;
        }
        let mut guard = self.lock();
        let was_closed = guard.machine.is_closed();
        let ejection = self.ejection.as_deref();
        let transition = guard
            .machine
            .record(ticket, outcome, slow, Instant::now, || {
                ejection.is_none_or(Ejection::try_eject)
            });
        let freed = outcome == Outcome::Ignore && ticket.is_trial();
        self.settle(guard, was_closed, transition, freed);
    }

    fn cancel(&self, ticket: Ticket) {
        if !ticket.is_trial() {
            return;
        }
        let mut guard = self.lock();
        let freed = guard.machine.release(ticket);
        self.settle(guard, true, None, freed);
    }

    pub(crate) fn trip(&self) {
        let mut guard = self.lock();
        let was_closed = guard.machine.is_closed();
        let transition = guard.machine.trip();
        if was_closed
            && transition.is_some()
            && let Some(e) = &self.ejection
        {
            e.force_eject();
        }
        self.settle(guard, was_closed, transition, false);
    }

    pub(crate) fn reset(&self) {
        let mut guard = self.lock();
        let was_closed = guard.machine.is_closed();
        let transition = guard.machine.reset();
        self.settle(guard, was_closed, transition, false);
    }

    /// After a change under the lock: gives back an ejection slot when the
    /// circuit closed, publishes the transition (still under the lock, so
    /// that events come out in the order of the transitions), and wakes
    /// waiters once the lock is released.
    fn settle(
        &self,
        mut guard: MutexGuard<'_, Guarded>,
        was_closed: bool,
        transition: Option<Transition>,
        freed: bool,
    ) {
        if transition == Some(Transition::Closed)
            && !was_closed
            && let Some(e) = &self.ejection
        {
            e.readmit();
        }
        self.refresh_hint(&guard);
        if let Some(t) = transition {
            self.publish(t);
        }
        let wake = (transition.is_some() || freed).then(|| std::mem::take(&mut guard.waiters));
        drop(guard);
        wake.into_iter().flatten().for_each(Waker::wake);
    }

    fn publish(&self, transition: Transition) {
        let key = self.key.to_string();
        let event = match transition {
            Transition::Opened { retry_after } => Event::CircuitOpen {
                key,
                retry_after: retry_after.unwrap_or(Duration::MAX),
            },
            Transition::HalfOpened => Event::CircuitHalfOpen { key },
            Transition::Closed => Event::CircuitClosed { key },
        };
        match &self.events {
            // The hub logs every event it publishes.
            Some(hub) => hub.publish(event),
            None => tracing::info!(
                target: "fluxor_registry::circuit",
                event = event.name(),
                key = event.key(),
            ),
        }
    }
}

impl Drop for Circuit {
    fn drop(&mut self) {
        if let Some(e) = &self.ejection {
            if !self.is_closed() {
                e.readmit();
            }
            e.leave();
        }
    }
}

// === impl Permit ===

/// The right to make one call: given back with its outcome by
/// [`Permit::complete`], or, when dropped unused (a cancelled call), given
/// back without counting.
pub(crate) struct Permit {
    circuit: Arc<Circuit>,
    ticket: Ticket,
    start: Option<Instant>,
    done: bool,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("key", &self.circuit.key)
            .field("trial", &self.ticket.is_trial())
            .finish()
    }
}

impl Permit {
    fn new(circuit: Arc<Circuit>, ticket: Ticket, timed: bool) -> Self {
        Self {
            circuit,
            ticket,
            start: timed.then(Instant::now),
            done: false,
        }
    }

    /// Whether the circuit is still in the state that granted the permit
    /// (it has neither opened nor closed since).
    pub(crate) fn is_current(&self) -> bool {
        Hint(self.circuit.hint.load(Ordering::Acquire)).is_current(self.ticket)
    }

    /// How long since the permit was granted, if it was timed.
    pub(crate) fn elapsed(&self) -> Duration {
        self.start.map(|s| s.elapsed()).unwrap_or_default()
    }

    /// Records the call's outcome.
    pub(crate) fn complete(mut self, outcome: Outcome, elapsed: Duration) {
        self.done = true;
        let slow = self.circuit.slow_call_duration.is_some_and(|d| elapsed > d);
        self.circuit.finish(self.ticket, outcome, slow);
    }

    /// Classifies `result` and records it.
    pub(crate) fn classify<T, E, C: Classify<T, E> + ?Sized>(
        self,
        classify: &C,
        result: &Result<T, E>,
    ) {
        let elapsed = self.elapsed();
        let outcome = classify.classify(result, elapsed);
        self.complete(outcome, elapsed);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.done {
            self.circuit.cancel(self.ticket);
        }
    }
}

// === impl CircuitBreaker ===

/// Per-key circuit breakers with the original module's imperative API:
/// [`execute`](Self::execute), [`trip`](Self::trip), [`reset`](Self::reset)
/// and [`get_state`](Self::get_state). Cheap to clone; clones share state.
///
/// See the [module docs](super) for the state machine and an example.
#[derive(Clone)]
pub struct CircuitBreaker {
    shared: Arc<Shared>,
}

struct Shared {
    config: Arc<CircuitBreakerConfig>,
    circuits: DashMap<Arc<str>, Arc<Circuit>>,
    events: std::sync::OnceLock<EventHub>,
    /// Dropped with the breaker, which stops the tasks of
    /// [`CircuitBreaker::attach`].
    stop: Mutex<Vec<oneshot::Sender<()>>>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("config", &self.shared.config)
            .field("circuits", &self.shared.circuits.len())
            .finish()
    }
}

/// [`CircuitBreaker::attach`] was called outside a tokio runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("CircuitBreaker::attach must be called inside a tokio runtime")]
pub struct AttachError;

impl CircuitBreaker {
    /// A breaker whose circuits follow `config`.
    ///
    /// A field out of range is replaced by the nearest valid value and
    /// logged as a `tracing` warning naming it (see
    /// [`CircuitBreakerConfig::sanitized`]); use [`try_new`](Self::try_new)
    /// to get the [`ConfigError`] instead.
    ///
    /// ```
    /// use std::time::Duration;
    /// use fluxor_registry::{CircuitBreaker, CircuitBreakerConfig, CircuitState};
    ///
    /// let breaker = CircuitBreaker::new(CircuitBreakerConfig {
    ///     failure_threshold: 5,
    ///     reset_timeout: Duration::from_secs(30),
    ///     ..Default::default()
    /// });
    /// assert_eq!(breaker.get_state("inventory-1"), CircuitState::Closed);
    /// ```
    pub fn new(config: CircuitBreakerConfig) -> Self {
        Self::build(config.sanitized_logged())
    }

    /// A breaker whose circuits follow `config`, or the first bad field.
    ///
    /// ```
    /// use fluxor_registry::{CircuitBreaker, CircuitBreakerConfig};
    ///
    /// let err = CircuitBreaker::try_new(CircuitBreakerConfig { half_open_max_calls: 0, ..Default::default() })
    ///     .unwrap_err();
    /// assert_eq!(err.field(), "half_open_max_calls");
    /// ```
    pub fn try_new(config: CircuitBreakerConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self::build(config))
    }

    fn build(config: CircuitBreakerConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                config: Arc::new(config),
                circuits: DashMap::new(),
                events: std::sync::OnceLock::new(),
                stop: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Publishes every transition on `hub` (e.g. [`ServiceRegistry::events`])
    /// as well as to `tracing`. Circuits created before keep publishing only
    /// to `tracing`, so call it before the first call; a second hub is
    /// ignored.
    pub fn with_events(self, hub: EventHub) -> Self {
        let _ = self.shared.events.set(hub);
        self
    }

    /// Attaches the breaker to `registry`: transitions are published on its
    /// event hub, and the circuit of an instance is removed when the
    /// instance is deregistered (keys are instance ids). Stops when the
    /// breaker is dropped.
    pub fn attach(self, registry: &ServiceRegistry) -> Result<Self, AttachError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| AttachError)?;
        let this = self.with_events(registry.events());
        let (tx, mut stop) = oneshot::channel();
        this.shared
            .stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(tx);
        let weak = Arc::downgrade(&this.shared);
        let mut events = registry.subscribe();
        runtime.spawn(async move {
            loop {
                let event = tokio::select! {
                    _ = &mut stop => return,
                    event = events.recv() => event,
                };
                match event {
                    Ok(Event::Deregistered { instance, .. }) => {
                        let Some(shared) = weak.upgrade() else { return };
                        shared.circuits.remove(instance.id().as_str());
                    }
                    Ok(_) => {}
                    // Missed removals are left to the `max_keys` bound.
                    Err(crate::SubscriptionError::Lagged { .. }) => {}
                    Err(crate::SubscriptionError::Closed) => return,
                }
            }
        });
        Ok(this)
    }

    /// The configuration its circuits follow.
    pub fn config(&self) -> &CircuitBreakerConfig {
        &self.shared.config
    }

    /// Runs `operation` under the circuit `key`, unless the circuit rejects
    /// it; an `Err` counts as a failure. Dropping the returned future before
    /// it finishes counts nothing (and frees a half-open trial permit).
    pub async fn execute<T, E, F, Fut>(
        &self,
        key: impl AsRef<str>,
        operation: F,
    ) -> Result<T, CircuitError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.execute_classified(key, &ErrorIsFailure, operation)
            .await
    }

    /// [`execute`](Self::execute) with a [`Classify`] policy deciding what
    /// counts as a failure.
    pub async fn execute_classified<T, E, C, F, Fut>(
        &self,
        key: impl AsRef<str>,
        classify: &C,
        operation: F,
    ) -> Result<T, CircuitError<E>>
    where
        C: Classify<T, E> + ?Sized,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let permit = self
            .circuit(key.as_ref())
            .acquire(classify.uses_elapsed(), None)
            .map_err(|r| CircuitOpenError::new(r.key, r.retry_after))?;
        let result = operation().await;
        permit.classify(classify, &result);
        result.map_err(CircuitError::Inner)
    }

    /// Opens the circuit `key` until [`reset`](Self::reset), whatever its
    /// calls do.
    pub fn trip(&self, key: impl AsRef<str>) {
        self.circuit(key.as_ref()).trip();
    }

    /// Closes the circuit `key` and forgets its failures.
    pub fn reset(&self, key: impl AsRef<str>) {
        if let Some(circuit) = self.existing(key.as_ref()) {
            circuit.reset();
        }
    }

    /// The state of the circuit `key`; a key never used is closed.
    pub fn get_state(&self, key: impl AsRef<str>) -> CircuitState {
        self.existing(key.as_ref())
            .map_or(CircuitState::Closed, |c| c.current_state())
    }

    /// When the circuit `key`, open on a timer, lets trial calls through
    /// again (`None` when it is not open, or forced open until `reset`).
    pub fn reopens_at(&self, key: impl AsRef<str>) -> Option<Instant> {
        self.existing(key.as_ref()).and_then(|c| c.reopens_at())
    }

    /// Forgets the circuit `key`; returns whether there was one.
    pub fn remove(&self, key: impl AsRef<str>) -> bool {
        self.shared.circuits.remove(key.as_ref()).is_some()
    }

    /// How many circuits it holds (at most about `max_keys`).
    pub fn len(&self) -> usize {
        self.shared.circuits.len()
    }

    /// Whether it holds no circuit.
    pub fn is_empty(&self) -> bool {
        self.shared.circuits.is_empty()
    }

    fn existing(&self, key: &str) -> Option<Arc<Circuit>> {
        self.shared.circuits.get(key).map(|c| c.value().clone())
    }

    /// The circuit `key`, made on first use. Past `max_keys`, an idle
    /// circuit is evicted first, a closed one if there is one.
    pub(crate) fn circuit(&self, key: &str) -> Arc<Circuit> {
        if let Some(circuit) = self.existing(key) {
            return circuit;
        }
        let shared = &self.shared;
        if shared.circuits.len() >= shared.config.max_keys {
            self.evict_one();
        }
        let key: Arc<str> = Arc::from(key);
        shared
            .circuits
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Circuit::new(
                    key,
                    shared.config.clone(),
                    shared.events.get().cloned(),
                    None,
                ))
            })
            .value()
            .clone()
    }

    fn evict_one(&self) {
        let mut victim: Option<Arc<str>> = None;
        for entry in self.shared.circuits.iter() {
            // Only this map holds an idle circuit.
            if Arc::strong_count(entry.value()) > 1 {
                continue;
            }
            if entry.value().is_closed() {
                victim = Some(entry.key().clone());
                break;
            }
            victim.get_or_insert_with(|| entry.key().clone());
        }
        if let Some(key) = victim {
            self.shared.circuits.remove(&key);
        }
    }
}
