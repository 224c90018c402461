use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::{Stream, TryStream};
use pin_project_lite::pin_project;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tower::Layer;
use tower::discover::Change;

use super::checker::HealthChecker;
use crate::event::{Event, EventStream};
use crate::instance::{HealthStatus, InstanceId};

/// Removes endpoints from a `Discover` stream while their instance is
/// unhealthy and inserts them again when it recovers.
///
/// The stream must be keyed by [`InstanceId`] (the registry's
/// [`discover`](crate::ServiceRegistry::discover) stream, mapped or not) and
/// its endpoint services must be `Clone`, so that a held-back endpoint can
/// be inserted again. Health comes from the [`HealthChecker`]: the
/// aggregate of the instance's running checks, or the registry's status for
/// an instance it does not check; an instance unknown to both passes.
///
/// This is what a balancer needs and `tower::balance` lacks: tower evicts an
/// endpoint whose `poll_ready` fails and never brings it back, while this
/// layer brings it back when its health checks pass again.
///
/// With a [panic threshold](Self::panic_threshold), as in Envoy, when fewer
/// than that share of the endpoints are healthy every endpoint is routed to
/// (better to try a possibly bad endpoint than to fail every request), and
/// the unhealthy ones are removed again once enough have recovered.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use fluxor_registry::{
///     CheckSpec, HealthChecker, HealthCheckerConfig, HealthConfig, HealthFilterLayer, Query,
///     ServiceDefinition, ServiceRegistry,
/// };
/// use futures_util::StreamExt;
/// use tower::{Layer, discover::Change};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = ServiceRegistry::builder().build().await?;
/// let checker = HealthChecker::new(registry.clone(), HealthCheckerConfig::default());
/// let api = registry.register(ServiceDefinition::new("api", "127.0.0.1", 9000)).await?;
/// checker.start_health_checks(&api, HealthConfig {
///     checks: vec![CheckSpec::ttl(Duration::from_secs(30)).name("alive")],
///     ..Default::default()
/// })?;
/// let mut healthy = HealthFilterLayer::new(checker.clone())
///     .layer(registry.discover(Query::name("api")));
///
/// checker.pass_ttl(api.id(), "alive", "up")?;
/// assert!(matches!(healthy.next().await, Some(Ok(Change::Insert(..)))));
/// checker.fail_ttl(api.id(), "alive", "down")?;
/// assert!(matches!(healthy.next().await, Some(Ok(Change::Remove(..)))));
/// checker.pass_ttl(api.id(), "alive", "up again")?;
/// assert!(matches!(healthy.next().await, Some(Ok(Change::Insert(..)))));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct HealthFilterLayer {
    checker: HealthChecker,
    panic_threshold: Option<f64>,
}

impl HealthFilterLayer {
    /// Filters by `checker`'s view of health; no panic threshold.
    pub fn new(checker: HealthChecker) -> Self {
        Self {
            checker,
            panic_threshold: None,
        }
    }

    /// Routes to every endpoint while fewer than `share` (`0.0..=1.0`,
    /// clamped) of them are healthy. Envoy's default is 0.5.
    pub fn panic_threshold(mut self, share: f64) -> Self {
        self.panic_threshold = Some(if share.is_nan() {
            0.0
        } else {
            share.clamp(0.0, 1.0)
        });
        self
    }
}

impl<D, S> Layer<D> for HealthFilterLayer
where
    D: TryStream<Ok = Change<InstanceId, S>>,
{
    type Service = HealthFilterDiscover<D, S>;

    fn layer(&self, discover: D) -> Self::Service {
        HealthFilterDiscover {
            changes: BroadcastStream::new(self.checker.subscribe_changes()),
            registry_events: self.checker.registry().subscribe().into_stream(),
            discover,
            checker: self.checker.clone(),
            panic_threshold: self.panic_threshold,
            endpoints: HashMap::new(),
            healthy: 0,
            panicking: false,
            pending: VecDeque::new(),
        }
    }
}

struct Tracked<S> {
    service: S,
    healthy: bool,
    emitted: bool,
}

pin_project! {
    /// A `Discover` without the endpoints of unhealthy instances; from
    /// [`HealthFilterLayer`].
    pub struct HealthFilterDiscover<D, S> {
        #[pin]
        discover: D,
        checker: HealthChecker,
        changes: BroadcastStream<(InstanceId, HealthStatus)>,
        // The registry's health events: statuses set by anyone but the
        // checker (an instance it does not check) reach the filter too.
        registry_events: EventStream,
        panic_threshold: Option<f64>,
        endpoints: HashMap<InstanceId, Tracked<S>>,
        healthy: usize,
        panicking: bool,
        pending: VecDeque<Change<InstanceId, S>>,
    }
}

impl<D: fmt::Debug, S> fmt::Debug for HealthFilterDiscover<D, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthFilterDiscover")
            .field("discover", &self.discover)
            .field("endpoints", &self.endpoints.len())
            .field("healthy", &self.healthy)
            .field("panicking", &self.panicking)
            .finish_non_exhaustive()
    }
}

impl<D, S> HealthFilterDiscover<D, S> {
    /// How many endpoints the stream above has inserted, and how many of
    /// them are healthy.
    pub fn counts(&self) -> (usize, usize) {
        (self.endpoints.len(), self.healthy)
    }

    /// Whether the panic threshold is crossed and every endpoint is routed.
    pub fn is_panicking(&self) -> bool {
        self.panicking
    }
}

/// The filter's bookkeeping, apart from the pinned stream.
struct Filter<'a, S> {
    endpoints: &'a mut HashMap<InstanceId, Tracked<S>>,
    healthy: &'a mut usize,
    panicking: &'a mut bool,
    pending: &'a mut VecDeque<Change<InstanceId, S>>,
    panic_threshold: Option<f64>,
}

impl<S: Clone> Filter<'_, S> {
    fn insert(&mut self, id: InstanceId, service: S, healthy: bool) {
        let mut was_emitted = false;
        if let Some(old) = self.endpoints.remove(&id) {
            was_emitted = old.emitted;
            if old.healthy {
                *self.healthy -= 1;
            }
        }
        if healthy {
            *self.healthy += 1;
        }
        let tracked = Tracked {
            service,
            healthy,
            emitted: was_emitted,
        };
        self.endpoints.insert(id.clone(), tracked);
        if !self.update_panic() {
            self.reconcile(&id);
        }
        // A replaced endpoint that stays routed: forward the new service.
        if was_emitted
            && let Some(tracked) = self.endpoints.get(&id)
            && tracked.emitted
        {
            self.pending
                .push_back(Change::Insert(id, tracked.service.clone()));
        }
    }

    fn remove(&mut self, id: &InstanceId) {
        if let Some(old) = self.endpoints.remove(id) {
            if old.healthy {
                *self.healthy -= 1;
            }
            if old.emitted {
                self.pending.push_back(Change::Remove(id.clone()));
            }
            self.update_panic();
        }
    }

    fn set_health(&mut self, id: &InstanceId, healthy: bool) {
        let Some(tracked) = self.endpoints.get_mut(id) else {
            return;
        };
        if tracked.healthy == healthy {
            return;
        }
        tracked.healthy = healthy;
        if healthy {
            *self.healthy += 1;
        } else {
            *self.healthy -= 1;
        }
        if !self.update_panic() {
            self.reconcile(id);
        }
    }

    /// Recomputes panic mode; when it flips, reconciles every endpoint and
    /// returns true.
    fn update_panic(&mut self) -> bool {
        let total = self.endpoints.len();
        let panicking = match self.panic_threshold {
            Some(share) if total > 0 => (*self.healthy as f64) < share * total as f64,
            _ => false,
        };
        if panicking == *self.panicking {
            return false;
        }
        *self.panicking = panicking;
        let ids: Vec<InstanceId> = self.endpoints.keys().cloned().collect();
        for id in &ids {
            self.reconcile(id);
        }
        true
    }

    /// Emits what makes `id`'s endpoint routed exactly when it should be.
    fn reconcile(&mut self, id: &InstanceId) {
        let panicking = *self.panicking;
        let Some(tracked) = self.endpoints.get_mut(id) else {
            return;
        };
        let wanted = tracked.healthy || panicking;
        match (wanted, tracked.emitted) {
            (true, false) => {
                tracked.emitted = true;
                self.pending
                    .push_back(Change::Insert(id.clone(), tracked.service.clone()));
            }
            (false, true) => {
                tracked.emitted = false;
                self.pending.push_back(Change::Remove(id.clone()));
            }
            _ => {}
        }
    }
}

impl<D, S> Stream for HealthFilterDiscover<D, S>
where
    D: TryStream<Ok = Change<InstanceId, S>>,
    S: Clone,
{
    type Item = Result<Change<InstanceId, S>, D::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        let checker = this.checker;
        let mut filter = Filter {
            endpoints: this.endpoints,
            healthy: this.healthy,
            panicking: this.panicking,
            pending: this.pending,
            panic_threshold: *this.panic_threshold,
        };
        loop {
            if let Some(change) = filter.pending.pop_front() {
                return Poll::Ready(Some(Ok(change)));
            }
            // Health first, so that no endpoint is handed out after its
            // instance was reported unhealthy.
            let mut changes_open = true;
            while changes_open {
                match Pin::new(&mut *this.changes).poll_next(cx) {
                    Poll::Ready(Some(Ok((id, status)))) => {
                        filter.set_health(&id, status.is_healthy());
                    }
                    Poll::Ready(Some(Err(BroadcastStreamRecvError::Lagged(_)))) => {
                        let ids: Vec<InstanceId> = filter.endpoints.keys().cloned().collect();
                        for id in ids {
                            let healthy = checker.status_of(&id).is_none_or(|s| s.is_healthy());
                            filter.set_health(&id, healthy);
                        }
                    }
                    // The checker is gone: statuses stay as they are.
                    Poll::Ready(None) | Poll::Pending => changes_open = false,
                }
            }
            loop {
                match Pin::new(&mut *this.registry_events).poll_next(cx) {
                    Poll::Ready(Some(Ok(
                        Event::Healthy { instance, .. } | Event::Unhealthy { instance, .. },
                    ))) => {
                        let healthy = checker
                            .status_of(instance.id())
                            .is_none_or(|s| s.is_healthy());
                        filter.set_health(instance.id(), healthy);
                    }
                    Poll::Ready(Some(Ok(_))) => {}
                    Poll::Ready(Some(Err(_))) => {
                        let ids: Vec<InstanceId> = filter.endpoints.keys().cloned().collect();
                        for id in ids {
                            let healthy = checker.status_of(&id).is_none_or(|s| s.is_healthy());
                            filter.set_health(&id, healthy);
                        }
                    }
                    Poll::Ready(None) | Poll::Pending => break,
                }
            }
            if !filter.pending.is_empty() {
                continue;
            }
            match this.discover.as_mut().try_poll_next(cx) {
                Poll::Ready(Some(Ok(Change::Insert(id, service)))) => {
                    let healthy = checker.status_of(&id).is_none_or(|s| s.is_healthy());
                    filter.insert(id, service, healthy);
                }
                Poll::Ready(Some(Ok(Change::Remove(id)))) => filter.remove(&id),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
