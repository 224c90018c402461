//! [`CircuitBreakerService`]: `poll_ready` reserves a call from the circuit,
//! `call` spends it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};
use tower::BoxError;
use tower_service::Service;

use super::breaker::{Circuit, Permit, Refused};
use super::classify::Classify;
use super::error::{CircuitOpenError, NotReadyError};
use super::future::ResponseFuture;
use super::layer::WhenOpen;
use super::machine::CircuitState;

/// A service behind a circuit breaker; made by
/// [`CircuitBreakerLayer`](super::CircuitBreakerLayer).
pub struct CircuitBreakerService<S, C> {
    inner: S,
    circuit: Arc<Circuit>,
    classify: C,
    when_open: WhenOpen,
    /// Reserved by `poll_ready`, spent by `call`.
    reserved: Option<Permit>,
    /// Fail-fast mode: the rejection `call` returns.
    rejected: Option<Refused>,
    /// Wakes a not-ready service when its circuit turns half-open; made on
    /// first need and reset after.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<S, C> CircuitBreakerService<S, C> {
    pub(crate) fn new(inner: S, circuit: Arc<Circuit>, classify: C, when_open: WhenOpen) -> Self {
        Self {
            inner,
            circuit,
            classify,
            when_open,
            reserved: None,
            rejected: None,
            sleep: None,
        }
    }

    /// The circuit's key.
    pub fn key(&self) -> &str {
        self.circuit.key()
    }

    /// The circuit's state now.
    pub fn state(&self) -> CircuitState {
        self.circuit.state(Instant::now())
    }

    /// Opens the circuit until [`reset`](Self::reset).
    pub fn trip(&self) {
        self.circuit.trip();
    }

    /// Closes the circuit and forgets its failures.
    pub fn reset(&self) {
        self.circuit.reset();
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Whether the timer until `at` has fired, arming it if needed.
    fn timer_fired(&mut self, at: Instant, cx: &mut Context<'_>) -> bool {
        let sleep = match &mut self.sleep {
            Some(sleep) => {
                if sleep.deadline() != at {
                    sleep.as_mut().reset(at);
                }
                sleep
            }
            None => self.sleep.insert(Box::pin(tokio::time::sleep_until(at))),
        };
        sleep.as_mut().poll(cx).is_ready()
    }
}

impl<S: Clone, C: Clone> Clone for CircuitBreakerService<S, C> {
    /// A clone shares the circuit, not the reservation.
    fn clone(&self) -> Self {
        Self::new(
            self.inner.clone(),
            self.circuit.clone(),
            self.classify.clone(),
            self.when_open,
        )
    }
}

impl<S: fmt::Debug, C> fmt::Debug for CircuitBreakerService<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerService")
            .field("inner", &self.inner)
            .field("circuit", &self.circuit)
            .field("when_open", &self.when_open)
            .field("reserved", &self.reserved.is_some())
            .finish()
    }
}

impl<S, C, Req> Service<Req> for CircuitBreakerService<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // A fail-fast rejection is retried: time may have passed.
        self.rejected = None;
        // A reservation from before a transition is stale: a balancer that
        // checks readiness again before calling (tower's p2c does) must not
        // send a request through a circuit that has opened since.
        if self.reserved.as_ref().is_some_and(|p| !p.is_current()) {
            self.reserved = None;
        }
        while self.reserved.is_none() {
            let waker = (self.when_open == WhenOpen::NotReady).then(|| cx.waker());
            match self
                .circuit
                .clone()
                .acquire(self.classify.uses_elapsed(), waker)
            {
                Ok(permit) => self.reserved = Some(permit),
                Err(refused) if self.when_open == WhenOpen::FailFast => {
                    self.rejected = Some(refused);
                    return Poll::Ready(Ok(()));
                }
                Err(refused) => match refused.reopens_at {
                    // Open on a timer: wake when it turns half-open.
                    Some(at) if self.timer_fired(at, cx) => continue,
                    Some(_) => return Poll::Pending,
                    // Forced open or every trial taken: the circuit wakes us.
                    None => return Poll::Pending,
                },
            }
        }
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => {
                // The call will not happen: give the permit back uncounted.
                self.reserved = None;
                Poll::Ready(Err(e.into()))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, request: Req) -> Self::Future {
        if let Some(permit) = self.reserved.take() {
            let future = self.inner.call(request);
            return ResponseFuture::called(future, permit, self.classify.clone());
        }
        let error: BoxError = match self.rejected.take() {
            Some(refused) => Box::new(CircuitOpenError::new(refused.key, refused.retry_after)),
            None => Box::new(NotReadyError),
        };
        ResponseFuture::rejected(error, self.classify.clone())
    }
}
