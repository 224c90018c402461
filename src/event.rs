//! [`Event`]s and the hub that broadcasts them.
//!
//! Every registration, deregistration, health transition and circuit
//! transition is one [`Event`], sent to every [`Subscription`] and logged as a
//! `tracing` event (target `fluxor_registry::event`). [`Event::name`] gives
//! the original module's names (`service-registered`, …).
//!
//! The hub is a bounded broadcast: publishing never waits for subscribers,
//! and a subscriber that falls more than the capacity behind gets
//! [`SubscriptionError::Lagged`] with the number of events it missed, then
//! carries on from the oldest event still held. It can resync by reading the
//! registry (e.g. [`ServiceRegistry::get_all_services`]).
//!
//! [`ServiceRegistry::get_all_services`]: crate::ServiceRegistry::get_all_services
//!
//! # Examples
//!
//! ```
//! use fluxor_registry::{Event, ServiceDefinition, ServiceRegistry};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = ServiceRegistry::builder().build().await?;
//! let mut events = registry.subscribe();
//! registry.register(ServiceDefinition::new("orders", "127.0.0.1", 8080)).await?;
//! let event = events.recv().await?;
//! assert_eq!(event.name(), "service-registered");
//! assert!(matches!(event, Event::Registered { .. }));
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::instance::{HealthStatus, ServiceInstance};

/// How many events a subscriber may fall behind before it lags, by default.
pub const DEFAULT_EVENT_CAPACITY: usize = 1024;

/// Something that happened in the registry, the health checker or a circuit
/// breaker.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// An instance was registered, or registered again under its id (then
    /// `replaced` is true and the instance was updated in place).
    Registered {
        /// The instance as now registered.
        instance: ServiceInstance,
        /// Whether it replaced an earlier registration with the same id.
        replaced: bool,
    },
    /// An instance left the registry.
    Deregistered {
        /// The instance as it was last registered.
        instance: ServiceInstance,
        /// Why it left.
        reason: DeregisterReason,
    },
    /// An instance became healthy (passing or warning).
    Healthy {
        /// The instance with its new status.
        instance: ServiceInstance,
        /// The status it had before.
        previous: HealthStatus,
    },
    /// An instance became unhealthy (critical or unknown).
    Unhealthy {
        /// The instance with its new status.
        instance: ServiceInstance,
        /// The status it had before.
        previous: HealthStatus,
    },
    /// A circuit opened: calls under `key` are rejected.
    CircuitOpen {
        /// The circuit's key (usually an instance id).
        key: String,
        /// How long until it lets a trial call through.
        retry_after: Duration,
    },
    /// A circuit is half-open: trial calls are let through.
    CircuitHalfOpen {
        /// The circuit's key.
        key: String,
    },
    /// A circuit closed: calls flow normally.
    CircuitClosed {
        /// The circuit's key.
        key: String,
    },
}

/// Why an instance was deregistered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum DeregisterReason {
    /// [`ServiceRegistry::deregister`](crate::ServiceRegistry::deregister)
    /// was called.
    Requested,
    /// Its TTL passed without a heartbeat.
    Expired,
    /// Its health checks stayed critical past `deregister_critical_after`.
    Critical,
}

impl DeregisterReason {
    /// `"requested"`, `"expired"` or `"critical"`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeregisterReason::Requested => "requested",
            DeregisterReason::Expired => "expired",
            DeregisterReason::Critical => "critical",
        }
    }
}

impl fmt::Display for DeregisterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Event {
    /// The original module's name for the event: `service-registered`,
    /// `service-deregistered`, `service-healthy`, `service-unhealthy`,
    /// `circuit-breaker-open`, `circuit-breaker-half-open` or
    /// `circuit-breaker-closed`.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Registered { .. } => "service-registered",
            Event::Deregistered { .. } => "service-deregistered",
            Event::Healthy { .. } => "service-healthy",
            Event::Unhealthy { .. } => "service-unhealthy",
            Event::CircuitOpen { .. } => "circuit-breaker-open",
            Event::CircuitHalfOpen { .. } => "circuit-breaker-half-open",
            Event::CircuitClosed { .. } => "circuit-breaker-closed",
        }
    }

    /// The instance the event is about, for the registry and health events.
    pub fn instance(&self) -> Option<&ServiceInstance> {
        match self {
            Event::Registered { instance, .. }
            | Event::Deregistered { instance, .. }
            | Event::Healthy { instance, .. }
            | Event::Unhealthy { instance, .. } => Some(instance),
            _ => None,
        }
    }

    /// The instance id or circuit key the event is about.
    pub fn key(&self) -> &str {
        match self {
            Event::CircuitOpen { key, .. }
            | Event::CircuitHalfOpen { key }
            | Event::CircuitClosed { key } => key,
            other => other
                .instance()
                .map(|i| i.id().as_str())
                .unwrap_or_default(),
        }
    }

    fn trace(&self) {
        let name = self.name();
        let key = self.key();
        match self {
            Event::Deregistered { reason, .. } => {
                tracing::info!(target: "fluxor_registry::event", event = name, key, reason = reason.as_str());
            }
            Event::Healthy { instance, previous } | Event::Unhealthy { instance, previous } => {
                tracing::info!(
                    target: "fluxor_registry::event",
                    event = name, key, status = instance.health().as_str(), previous = previous.as_str()
                );
            }
            Event::CircuitOpen { retry_after, .. } => {
                tracing::warn!(target: "fluxor_registry::event", event = name, key, ?retry_after);
            }
            _ => tracing::info!(target: "fluxor_registry::event", event = name, key),
        }
    }
}

/// Broadcasts [`Event`]s to every [`Subscription`]; cheap to clone.
///
/// Get the registry's with [`ServiceRegistry::events`](crate::ServiceRegistry::events).
#[derive(Clone)]
pub struct EventHub {
    tx: broadcast::Sender<Event>,
}

impl fmt::Debug for EventHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventHub")
            .field("subscribers", &self.tx.receiver_count())
            .finish()
    }
}

impl EventHub {
    /// A hub holding at most `capacity` events for its slowest subscriber
    /// (at least 1).
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self { tx }
    }

    /// A new subscriber, which sees every event published from now on.
    pub fn subscribe(&self) -> Subscription {
        Subscription {
            rx: self.tx.subscribe(),
        }
    }

    /// Publishes `event` to every subscriber and to `tracing`. Never waits.
    pub(crate) fn publish(&self, event: Event) {
        event.trace();
        // No subscriber is not an error: events are fire-and-forget.
        let _ = self.tx.send(event);
    }
}

impl Default for EventHub {
    fn default() -> Self {
        Self::new(DEFAULT_EVENT_CAPACITY)
    }
}

/// Why [`Subscription::recv`] returned no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionError {
    /// The subscriber fell behind and `missed` events were dropped for it.
    /// The next call returns the oldest event still held.
    #[error("subscriber lagged behind and missed {missed} events")]
    Lagged {
        /// How many events were dropped.
        missed: u64,
    },
    /// Every handle to the hub is gone; no more events will come.
    #[error("the event hub is closed")]
    Closed,
}

/// One subscriber's view of the [`EventHub`].
pub struct Subscription {
    rx: broadcast::Receiver<Event>,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("pending", &self.rx.len())
            .finish()
    }
}

impl Subscription {
    /// The next event, waiting for one.
    pub async fn recv(&mut self) -> Result<Event, SubscriptionError> {
        self.rx.recv().await.map_err(|e| match e {
            broadcast::error::RecvError::Lagged(missed) => SubscriptionError::Lagged { missed },
            broadcast::error::RecvError::Closed => SubscriptionError::Closed,
        })
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Result<Option<Event>, SubscriptionError> {
        match self.rx.try_recv() {
            Ok(event) => Ok(Some(event)),
            Err(broadcast::error::TryRecvError::Empty) => Ok(None),
            Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                Err(SubscriptionError::Lagged { missed })
            }
            Err(broadcast::error::TryRecvError::Closed) => Err(SubscriptionError::Closed),
        }
    }

    /// The subscription as a `Stream` of events; a lag is an `Err` item and
    /// the stream goes on after it.
    pub fn into_stream(self) -> EventStream {
        EventStream {
            inner: BroadcastStream::new(self.rx),
        }
    }
}

/// A [`Subscription`] as a `Stream`; see [`Subscription::into_stream`].
pub struct EventStream {
    inner: BroadcastStream<Event>,
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream").finish_non_exhaustive()
    }
}

impl Stream for EventStream {
    type Item = Result<Event, SubscriptionError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx).map(|item| {
            item.map(|r| {
                r.map_err(
                    |BroadcastStreamRecvError::Lagged(missed)| SubscriptionError::Lagged { missed },
                )
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slow_subscriber_lags_and_recovers_without_blocking() {
        let hub = EventHub::new(4);
        let mut slow = hub.subscribe();
        for i in 0..10 {
            hub.publish(Event::CircuitClosed { key: i.to_string() });
        }
        assert_eq!(
            slow.recv().await.unwrap_err(),
            SubscriptionError::Lagged { missed: 6 }
        );
        let next = slow.recv().await.unwrap();
        assert_eq!(next.key(), "6");
        assert_eq!(next.name(), "circuit-breaker-closed");
    }
}
