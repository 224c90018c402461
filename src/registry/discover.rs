//! The registry as a [`tower::discover::Discover`] stream, and the step that
//! turns instances into endpoint services.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, ready};

use futures_core::{Stream, TryStream};
use pin_project_lite::pin_project;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tower::discover::Change;

use super::service_registry::{IndexChange, Inner};
use crate::endpoint::layer::map_change;
use crate::instance::{InstanceId, ServiceInstance};
use crate::query::Query;

/// The instances matching a [`Query`], as a `tower` [`Discover`] stream of
/// [`Change<InstanceId, ServiceInstance>`]; from
/// [`ServiceRegistry::discover`](crate::ServiceRegistry::discover).
///
/// It yields an [`Change::Insert`] for every instance matching when it was
/// created, then one change for each registration, deregistration, expiry or
/// update that affects the query: an `Insert` when an instance starts to
/// match or its definition changes while it matches, a `Remove` when it
/// stops matching (deregistered, expired, or no longer healthy for a
/// `healthy_only` query). The snapshot and the changes come from one
/// consistent cut, so nothing falls between them and no instance is
/// inserted twice without a change.
///
/// It never ends while the registry lives, and never fails (its error type
/// is [`Infallible`]). If it falls far behind the registry's writes, it
/// resyncs from a fresh snapshot and yields only the differences. Dropping
/// it unsubscribes.
///
/// Map instances to services with [`endpoints`](Self::endpoints) to feed a
/// balancer.
///
/// [`Discover`]: tower::discover::Discover
///
/// # Examples
///
/// ```
/// use futures_util::StreamExt;
/// use fluxor_registry::{Query, ServiceDefinition, ServiceRegistry};
/// use tower::discover::Change;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = ServiceRegistry::builder().build().await?;
/// let mut discover = registry.discover(Query::name("orders"));
/// let instance = registry.register(ServiceDefinition::new("orders", "127.0.0.1", 8080)).await?;
/// match discover.next().await {
///     Some(Ok(Change::Insert(id, inserted))) => {
///         assert_eq!(&id, instance.id());
///         assert_eq!(inserted.port(), 8080);
///     }
///     other => panic!("expected an insert, got {other:?}"),
/// }
/// # Ok(())
/// # }
/// ```
pub struct ServiceDiscover {
    registry: Weak<Inner>,
    query: Query,
    rx: BroadcastStream<Arc<IndexChange>>,
    pending: VecDeque<Change<InstanceId, ServiceInstance>>,
    /// What this stream has inserted and not removed, as inserted.
    emitted: HashMap<InstanceId, ServiceInstance>,
}

impl fmt::Debug for ServiceDiscover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceDiscover")
            .field("query", &self.query)
            .field("endpoints", &self.emitted.len())
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl ServiceDiscover {
    pub(crate) fn new(registry: Weak<Inner>, query: Query, inner: &Inner) -> Self {
        let (snapshot, rx) = inner.snapshot_and_subscribe(&query);
        let mut this = Self {
            registry,
            query,
            rx: BroadcastStream::new(rx),
            pending: VecDeque::with_capacity(snapshot.len()),
            emitted: HashMap::with_capacity(snapshot.len()),
        };
        for instance in snapshot {
            this.insert(instance);
        }
        this
    }

    /// The query this stream follows.
    pub fn query(&self) -> &Query {
        &self.query
    }

    /// Maps each instance to an endpoint service with `make`, for a balancer
    /// (`tower::balance::p2c::Balance`, or this crate's layers).
    pub fn endpoints<M>(self, make: M) -> Endpoints<Self, M>
    where
        M: MakeEndpoint,
    {
        Endpoints::new(self, make)
    }

    fn insert(&mut self, instance: ServiceInstance) {
        self.emitted.insert(instance.id().clone(), instance.clone());
        self.pending
            .push_back(Change::Insert(instance.id().clone(), instance));
    }

    fn remove(&mut self, id: &InstanceId) {
        if self.emitted.remove(id).is_some() {
            self.pending.push_back(Change::Remove(id.clone()));
        }
    }

    fn apply(&mut self, change: &IndexChange) {
        match change {
            IndexChange::Upsert(instance) => {
                if self.query.matches(instance) {
                    let unchanged = self
                        .emitted
                        .get(instance.id())
                        .is_some_and(|seen| seen.definition() == instance.definition());
                    if !unchanged {
                        self.insert(instance.clone());
                    }
                } else {
                    self.remove(instance.id());
                }
            }
            IndexChange::Remove(instance) => self.remove(instance.id()),
        }
    }

    /// After a lag: take a fresh cut and yield only the differences.
    /// Returns false when the registry is gone.
    fn resync(&mut self) -> bool {
        let Some(inner) = self.registry.upgrade() else {
            return false;
        };
        let (snapshot, rx) = inner.snapshot_and_subscribe(&self.query);
        self.rx = BroadcastStream::new(rx);
        let current: HashMap<InstanceId, ServiceInstance> =
            snapshot.into_iter().map(|i| (i.id().clone(), i)).collect();
        let gone: Vec<InstanceId> = self
            .emitted
            .keys()
            .filter(|id| !current.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            self.remove(&id);
        }
        for (id, instance) in current {
            let unchanged = self
                .emitted
                .get(&id)
                .is_some_and(|seen| seen.definition() == instance.definition());
            if !unchanged {
                self.insert(instance);
            }
        }
        true
    }
}

impl Stream for ServiceDiscover {
    type Item = Result<Change<InstanceId, ServiceInstance>, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(change) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(change)));
            }
            match ready!(Pin::new(&mut this.rx).poll_next(cx)) {
                Some(Ok(change)) => this.apply(&change),
                Some(Err(BroadcastStreamRecvError::Lagged(missed))) => {
                    tracing::debug!(
                        target: "fluxor_registry::registry",
                        missed, "discover stream lagged; resyncing"
                    );
                    if !this.resync() {
                        return Poll::Ready(None);
                    }
                }
                None => return Poll::Ready(None),
            }
        }
    }
}

// === MakeEndpoint ===

/// Turns an instance into the endpoint service that talks to it.
///
/// Implemented for every `FnMut(&ServiceInstance) -> S`.
pub trait MakeEndpoint {
    /// The endpoint service.
    type Service;

    /// Builds the endpoint for `instance`.
    fn make_endpoint(&mut self, instance: &ServiceInstance) -> Self::Service;
}

impl<F, S> MakeEndpoint for F
where
    F: FnMut(&ServiceInstance) -> S,
{
    type Service = S;

    fn make_endpoint(&mut self, instance: &ServiceInstance) -> S {
        self(instance)
    }
}

pin_project! {
    /// A `Discover` of instances mapped to endpoint services; from
    /// [`ServiceDiscover::endpoints`] or [`DiscoverExt::endpoints`].
    ///
    /// Each [`Change::Insert`] of an instance becomes an `Insert` of the
    /// service `make` builds for it; removals pass through.
    pub struct Endpoints<D, M> {
        #[pin]
        discover: D,
        make: M,
    }
}

impl<D: fmt::Debug, M> fmt::Debug for Endpoints<D, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoints")
            .field("discover", &self.discover)
            .finish_non_exhaustive()
    }
}

impl<D, M> Endpoints<D, M> {
    /// Maps `discover`'s instances with `make`.
    pub fn new(discover: D, make: M) -> Self {
        Self { discover, make }
    }
}

impl<D, M, K> Stream for Endpoints<D, M>
where
    D: TryStream<Ok = Change<K, ServiceInstance>>,
    M: MakeEndpoint,
{
    type Item = Result<Change<K, M::Service>, D::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        let make = this.make;
        let item = ready!(this.discover.try_poll_next(cx));
        Poll::Ready(
            item.map(|r| {
                r.map(|change| map_change(change, |instance| make.make_endpoint(&instance)))
            }),
        )
    }
}

/// Adds [`endpoints`](DiscoverExt::endpoints) to any stream of instance
/// changes (the registry's, or one filtered by a layer).
pub trait DiscoverExt<K>: TryStream<Ok = Change<K, ServiceInstance>> + Sized {
    /// Maps each instance to an endpoint service with `make`.
    fn endpoints<M: MakeEndpoint>(self, make: M) -> Endpoints<Self, M> {
        Endpoints::new(self, make)
    }
}

impl<K, D> DiscoverExt<K> for D where D: TryStream<Ok = Change<K, ServiceInstance>> {}
