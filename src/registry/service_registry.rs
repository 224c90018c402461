use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use dashmap::DashMap;
use tokio::sync::broadcast;
use tokio::task::AbortHandle;

use super::backend::{Backend, BackendStatus, MemoryBackend, RecoveryReport, RemoteChange};
use super::discover::ServiceDiscover;
use super::error::RegistryError;
use super::expiry::{self, Expiry};
use super::file::{FileBackend, FileOptions};
use crate::event::{DEFAULT_EVENT_CAPACITY, DeregisterReason, Event, EventHub, Subscription};
use crate::instance::{
    HealthStatus, InstanceId, Liveness, ServiceDefinition, ServiceInstance, system_now,
};
use crate::query::Query;

/// How many changes a discover stream may fall behind before it resyncs.
const CHANGE_CAPACITY: usize = 4096;

/// The service registry: register, deregister, heartbeat and find instances.
///
/// A cheap-to-clone handle (`Arc` inside); clones share one registry. Reads
/// ([`find_services`](Self::find_services), [`get_service`](Self::get_service))
/// use an in-process index by name and by id, sharded so that readers never
/// wait on one global lock; writes are serialized, applied to the index,
/// handed to the [`Backend`] and published as [`Event`]s and to every
/// [`discover`](Self::discover) stream.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use fluxor_registry::{Query, ServiceDefinition, ServiceRegistry};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = ServiceRegistry::builder().build().await?;
/// let instance = registry
///     .register(
///         ServiceDefinition::new("inventory-service", "127.0.0.1", 3001)
///             .version("1.0.0")
///             .tags(["inventory", "core"])
///             .ttl(Duration::from_secs(30)),
///     )
///     .await?;
/// registry.heartbeat(instance.id()).await?;
///
/// let found = registry.find_services(&Query::name("inventory-service").tag("core"));
/// assert_eq!(found, vec![instance.clone()]);
///
/// registry.deregister(instance.id()).await?;
/// assert!(registry.get_service(instance.id()).is_none());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ServiceRegistry {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    by_id: DashMap<InstanceId, ServiceInstance>,
    by_name: DashMap<String, BTreeMap<InstanceId, ServiceInstance>>,
    /// Serializes writes, so the index, the backend's write order, the
    /// events and the change feed all see one order.
    write: Mutex<()>,
    changes: broadcast::Sender<Arc<IndexChange>>,
    events: EventHub,
    backend: Arc<dyn Backend>,
    pub(crate) expiry: Expiry,
    recovery: RecoveryReport,
    tasks: Mutex<Vec<AbortHandle>>,
}

/// A backend write to await outside the write lock.
type Durable = super::backend::BoxFuture<'static, Result<(), super::BackendError>>;

/// One change to the index, as discover streams see it.
#[derive(Debug)]
pub(crate) enum IndexChange {
    Upsert(ServiceInstance),
    Remove(ServiceInstance),
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(tasks) = self.tasks.get_mut() {
            for task in tasks.drain(..) {
                task.abort();
            }
        }
    }
}

// === impl RegistryBuilder ===

/// Configures and builds a [`ServiceRegistry`]; from [`ServiceRegistry::builder`].
#[must_use]
pub struct RegistryBuilder {
    backend: BackendChoice,
    event_capacity: usize,
}

enum BackendChoice {
    Memory,
    File(PathBuf, FileOptions),
    Custom(Arc<dyn Backend>),
    #[cfg(feature = "etcd")]
    Etcd(super::etcd::EtcdOptions),
}

impl fmt::Debug for RegistryBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let backend = match &self.backend {
            BackendChoice::Memory => "memory".to_owned(),
            BackendChoice::File(p, _) => format!("file {}", p.display()),
            BackendChoice::Custom(b) => b.name().to_owned(),
            #[cfg(feature = "etcd")]
            BackendChoice::Etcd(o) => format!("etcd {:?} {}", o.endpoints, o.prefix),
        };
        f.debug_struct("RegistryBuilder")
            .field("backend", &backend)
            .field("event_capacity", &self.event_capacity)
            .finish()
    }
}

impl RegistryBuilder {
    /// Persists registrations to the file at `path` (created if missing);
    /// see [`FileBackend`] for the guarantees.
    pub fn persistence(self, path: impl Into<PathBuf>) -> Self {
        self.persistence_with(path, FileOptions::default())
    }

    /// Like [`persistence`](Self::persistence), with tuning.
    pub fn persistence_with(mut self, path: impl Into<PathBuf>, options: FileOptions) -> Self {
        self.backend = BackendChoice::File(path.into(), options);
        self
    }

    /// Uses a backend of your own.
    pub fn backend(mut self, backend: impl Backend) -> Self {
        self.backend = BackendChoice::Custom(Arc::new(backend));
        self
    }

    /// Shares the registry through etcd at `endpoints` (e.g.
    /// `"http://127.0.0.1:2379"`), under the prefix `/fluxor` unless
    /// [`prefix`](Self::prefix) says otherwise; see
    /// [`EtcdBackend`](super::etcd::EtcdBackend). `build` fails if etcd does
    /// not answer.
    #[cfg(feature = "etcd")]
    #[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
    pub fn etcd<I, S>(self, endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.etcd_options(super::etcd::EtcdOptions::new(endpoints))
    }

    /// Like [`etcd`](Self::etcd), with tuning.
    #[cfg(feature = "etcd")]
    #[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
    pub fn etcd_options(mut self, options: super::etcd::EtcdOptions) -> Self {
        self.backend = BackendChoice::Etcd(options);
        self
    }

    /// The etcd key prefix (default `/fluxor`): registries share instances
    /// when they share endpoints and prefix. Only meaningful after
    /// [`etcd`](Self::etcd).
    #[cfg(feature = "etcd")]
    #[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        if let BackendChoice::Etcd(options) = &mut self.backend {
            options.prefix = prefix.into();
        }
        self
    }

    /// How many events a subscriber may fall behind before it lags
    /// (default 1024).
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity;
        self
    }

    /// Opens the backend, loads what it holds and starts TTL expiry.
    /// Must run inside a tokio runtime.
    pub async fn build(self) -> Result<ServiceRegistry, RegistryError> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| RegistryError::NoRuntime)?;
        let backend: Arc<dyn Backend> = match self.backend {
            BackendChoice::Memory => Arc::new(MemoryBackend),
            BackendChoice::File(path, options) => {
                Arc::new(FileBackend::open_with(path, options).await?)
            }
            BackendChoice::Custom(backend) => backend,
            #[cfg(feature = "etcd")]
            BackendChoice::Etcd(options) => {
                Arc::new(super::etcd::EtcdBackend::connect(options).await?)
            }
        };
        let recovered = backend.load().await?;
        let (changes, _) = broadcast::channel(CHANGE_CAPACITY);
        let inner = Arc::new(Inner {
            by_id: DashMap::new(),
            by_name: DashMap::new(),
            write: Mutex::new(()),
            changes,
            events: EventHub::new(self.event_capacity),
            backend: backend.clone(),
            expiry: Expiry::new(),
            recovery: recovered.report,
            tasks: Mutex::new(Vec::new()),
        });
        let now = system_now();
        for loaded in recovered.instances {
            // Liveness is not persisted: a loaded instance gets a full TTL.
            let instance = inner.fresh_snapshot(&loaded, now);
            inner.expiry.schedule(instance.id(), instance.liveness());
            inner.index_insert(instance);
        }
        let mut tasks = Vec::new();
        tasks.push(
            handle
                .spawn(expiry::run(Arc::downgrade(&inner)))
                .abort_handle(),
        );
        if let Some(mut remote) = backend.remote_changes() {
            let weak = Arc::downgrade(&inner);
            let task = handle.spawn(async move {
                use futures_util::StreamExt;
                while let Some(change) = remote.next().await {
                    let Some(inner) = weak.upgrade() else { return };
                    inner.apply_remote(change);
                }
            });
            tasks.push(task.abort_handle());
        }
        if let Ok(mut slot) = inner.tasks.lock() {
            *slot = tasks;
        }
        Ok(ServiceRegistry { inner })
    }
}

// === impl ServiceRegistry ===

impl ServiceRegistry {
    /// A builder: in memory by default, [`persistence`](RegistryBuilder::persistence)
    /// for a file.
    pub fn builder() -> RegistryBuilder {
        RegistryBuilder {
            backend: BackendChoice::Memory,
            event_capacity: DEFAULT_EVENT_CAPACITY,
        }
    }

    /// Registers an instance, or updates in place the one registered under
    /// the same id (keeping its registration time and health).
    ///
    /// Validates the definition first ([`RegistryError::Invalid`] names the
    /// field). Publishes one [`Event::Registered`]. With persistence, the
    /// registration is on disk when this returns `Ok`.
    pub async fn register(
        &self,
        definition: ServiceDefinition,
    ) -> Result<ServiceInstance, RegistryError> {
        let version = definition.validate()?;
        let id = match definition.chosen_id() {
            Some(id) => id.clone(),
            None => InstanceId::generate(definition.name()),
        };
        let now = system_now();
        let inner = &self.inner;
        let (instance, durable) = {
            let _w = inner.write_lock();
            let deadline = inner.deadline_after(definition.ttl_value());
            let previous = inner.by_id.get(&id).map(|e| e.value().clone());
            let instance = match &previous {
                Some(prev) => {
                    prev.liveness().beat(now, deadline);
                    ServiceInstance::new(
                        id.clone(),
                        definition,
                        version,
                        prev.registered_at(),
                        prev.health(),
                        prev.liveness().clone(),
                    )
                }
                None => ServiceInstance::new(
                    id.clone(),
                    definition,
                    version,
                    now,
                    HealthStatus::default(),
                    Liveness::new(now, deadline),
                ),
            };
            inner.expiry.schedule(&id, instance.liveness());
            let durable = inner.backend.put(&instance);
            let event = Event::Registered {
                instance: instance.clone(),
                replaced: previous.is_some(),
            };
            inner.upsert_locked(instance.clone(), previous.as_ref(), Some(event));
            (instance, durable)
        };
        durable.await?;
        Ok(instance)
    }

    /// Removes an instance; returns it, or `None` if no instance had the id.
    ///
    /// Publishes one [`Event::Deregistered`] with reason
    /// [`DeregisterReason::Requested`]. With persistence, the removal is on
    /// disk when this returns `Ok`.
    pub async fn deregister(
        &self,
        id: &InstanceId,
    ) -> Result<Option<ServiceInstance>, RegistryError> {
        self.deregister_because(id, DeregisterReason::Requested)
            .await
    }

    /// [`deregister`](Self::deregister) with another reason (the health
    /// checker's `deregister_critical_after` uses [`DeregisterReason::Critical`]).
    pub(crate) async fn deregister_because(
        &self,
        id: &InstanceId,
        reason: DeregisterReason,
    ) -> Result<Option<ServiceInstance>, RegistryError> {
        let removed = {
            let _w = self.inner.write_lock();
            self.inner.remove_locked(id, reason, true)
        };
        match removed {
            Some((instance, durable)) => {
                if let Some(durable) = durable {
                    durable.await?;
                }
                Ok(Some(instance))
            }
            None => Ok(None),
        }
    }

    /// Records a heartbeat: the instance's TTL starts again and its
    /// [`last_heartbeat`](ServiceInstance::last_heartbeat) moves. Costs no
    /// write lock, no event and, with file persistence, no disk write.
    pub async fn heartbeat(&self, id: &InstanceId) -> Result<(), RegistryError> {
        let instance = self
            .inner
            .by_id
            .get(id)
            .map(|e| e.value().clone())
            .ok_or_else(|| RegistryError::NotFound(id.clone()))?;
        let deadline = self.inner.deadline_after(instance.ttl());
        instance.liveness().beat(system_now(), deadline);
        instance
            .liveness()
            .beat_ms
            .store(self.inner.expiry.now_ms(), Ordering::Release);
        self.inner.backend.heartbeat(&instance).await?;
        Ok(())
    }

    /// Sets an instance's health status, as the health checker does.
    ///
    /// Returns the previous status. When the instance goes from healthy to
    /// unhealthy or back, publishes one [`Event::Healthy`] or
    /// [`Event::Unhealthy`]; discover streams of `healthy_only` queries see
    /// it leave or join. Health is runtime state: it is not persisted.
    pub fn set_health_status(
        &self,
        id: &InstanceId,
        status: HealthStatus,
    ) -> Result<HealthStatus, RegistryError> {
        let inner = &self.inner;
        let _w = inner.write_lock();
        let current = inner
            .by_id
            .get(id)
            .map(|e| e.value().clone())
            .ok_or_else(|| RegistryError::NotFound(id.clone()))?;
        let previous = current.health();
        if previous == status {
            return Ok(previous);
        }
        let updated = current.with_health(status);
        let event = (previous.is_healthy() != status.is_healthy()).then(|| {
            if status.is_healthy() {
                Event::Healthy {
                    instance: updated.clone(),
                    previous,
                }
            } else {
                Event::Unhealthy {
                    instance: updated.clone(),
                    previous,
                }
            }
        });
        inner.upsert_locked(updated, Some(&current), event);
        Ok(previous)
    }

    /// When `id`'s last heartbeat arrived, on tokio's clock; `None` if it
    /// is not registered or has not sent one since it was registered.
    pub(crate) fn last_heartbeat_instant(&self, id: &InstanceId) -> Option<tokio::time::Instant> {
        let ms = self
            .inner
            .by_id
            .get(id)?
            .value()
            .liveness()
            .beat_ms
            .load(Ordering::Acquire);
        (ms != u64::MAX).then(|| self.inner.expiry.instant_at(ms))
    }

    /// The instances matching `query`, ordered by id.
    ///
    /// With a service name, only that name's instances are looked at; without
    /// one, every instance is.
    pub fn find_services(&self, query: &Query) -> Vec<ServiceInstance> {
        self.inner.find(query)
    }

    /// The instance with `id`.
    pub fn get_service(&self, id: &InstanceId) -> Option<ServiceInstance> {
        self.inner.by_id.get(id).map(|e| e.value().clone())
    }

    /// Every instance, ordered by id.
    pub fn get_all_services(&self) -> Vec<ServiceInstance> {
        self.inner.find(&Query::any())
    }

    /// The names of every registered service, sorted.
    pub fn service_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.inner.by_name.iter().map(|e| e.key().clone()).collect();
        names.sort();
        names
    }

    /// How many instances are registered.
    pub fn len(&self) -> usize {
        self.inner.by_id.len()
    }

    /// Whether no instance is registered.
    pub fn is_empty(&self) -> bool {
        self.inner.by_id.is_empty()
    }

    /// A new subscriber to the registry's events.
    pub fn subscribe(&self) -> Subscription {
        self.inner.events.subscribe()
    }

    /// The registry's event hub, for components (health checker, circuit
    /// breaker) that publish on it.
    pub fn events(&self) -> EventHub {
        self.inner.events.clone()
    }

    /// The instances matching `query` as a [`tower::discover::Discover`]:
    /// first each current match, then every change that affects the query.
    /// See [`ServiceDiscover`].
    pub fn discover(&self, query: Query) -> ServiceDiscover {
        ServiceDiscover::new(Arc::downgrade(&self.inner), query, &self.inner)
    }

    /// What the backend found and repaired when the registry was built.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    /// The backend's view of itself: whether reads may be stale (a shared
    /// backend lost its connection), how often it resynced, and what stored
    /// values it skipped. Always fresh for the memory and file backends.
    pub fn backend_status(&self) -> BackendStatus {
        self.inner.backend.status()
    }

    /// The backend's name (`"memory"`, `"file"`, …).
    pub fn backend_name(&self) -> &'static str {
        self.inner.backend.name()
    }
}

impl fmt::Debug for ServiceRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceRegistry")
            .field("backend", &self.inner.backend.name())
            .field("instances", &self.inner.by_id.len())
            .finish()
    }
}

// === impl Inner ===

impl Inner {
    /// The local expiry deadline of a registration with `ttl`: none when the
    /// backend owns liveness (etcd leases).
    fn deadline_after(&self, ttl: Option<std::time::Duration>) -> u64 {
        if self.backend.owns_liveness() {
            expiry::NO_DEADLINE
        } else {
            self.expiry.deadline_after(ttl)
        }
    }

    fn write_lock(&self) -> MutexGuard<'_, ()> {
        // The guarded data is `()`: a panic elsewhere cannot leave it broken.
        self.write
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn find(&self, query: &Query) -> Vec<ServiceInstance> {
        match query.service_name() {
            Some(name) => self
                .by_name
                .get(name)
                .map(|group| {
                    group
                        .values()
                        .filter(|i| query.matches(i))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default(),
            None => {
                let mut all: Vec<ServiceInstance> = self
                    .by_id
                    .iter()
                    .filter(|e| query.matches(e.value()))
                    .map(|e| e.value().clone())
                    .collect();
                all.sort_by(|a, b| a.id().cmp(b.id()));
                all
            }
        }
    }

    /// Takes a consistent snapshot of the matches and a change feed that
    /// starts right after it.
    pub(crate) fn snapshot_and_subscribe(
        &self,
        query: &Query,
    ) -> (Vec<ServiceInstance>, broadcast::Receiver<Arc<IndexChange>>) {
        let _w = self.write_lock();
        (self.find(query), self.changes.subscribe())
    }

    pub(crate) fn liveness_of(&self, id: &InstanceId) -> Option<Arc<Liveness>> {
        self.by_id.get(id).map(|e| e.value().liveness().clone())
    }

    fn fresh_snapshot(&self, loaded: &ServiceInstance, now: SystemTime) -> ServiceInstance {
        let deadline = self.deadline_after(loaded.ttl());
        ServiceInstance::new(
            loaded.id().clone(),
            loaded.definition().clone(),
            loaded.version().cloned(),
            loaded.registered_at(),
            HealthStatus::default(),
            Liveness::new(now, deadline),
        )
    }

    fn index_insert(&self, instance: ServiceInstance) {
        self.by_name
            .entry(instance.name().to_owned())
            .or_default()
            .insert(instance.id().clone(), instance.clone());
        self.by_id.insert(instance.id().clone(), instance);
    }

    fn index_remove(&self, instance: &ServiceInstance) {
        self.by_id.remove(instance.id());
        self.by_name.remove_if_mut(instance.name(), |_, group| {
            group.remove(instance.id());
            group.is_empty()
        });
    }

    /// Replaces `previous` (if any) with `instance` in the index, publishes
    /// `event`, then tells discover streams: whoever sees the change in a
    /// stream can count on its event having been published. Caller holds the
    /// write lock.
    fn upsert_locked(
        &self,
        instance: ServiceInstance,
        previous: Option<&ServiceInstance>,
        event: Option<Event>,
    ) {
        if let Some(prev) = previous.filter(|p| p.name() != instance.name()) {
            self.index_remove(prev);
        }
        self.index_insert(instance.clone());
        if let Some(event) = event {
            self.events.publish(event);
        }
        let _ = self.changes.send(Arc::new(IndexChange::Upsert(instance)));
    }

    /// Removes `id`, publishing its event and change; with `persist`, also
    /// tells the backend and returns its future. Caller holds the write lock.
    fn remove_locked(
        &self,
        id: &InstanceId,
        reason: DeregisterReason,
        persist: bool,
    ) -> Option<(ServiceInstance, Option<Durable>)> {
        let instance = self.by_id.get(id).map(|e| e.value().clone())?;
        let durable = persist.then(|| self.backend.delete(&instance));
        self.index_remove(&instance);
        self.events.publish(Event::Deregistered {
            instance: instance.clone(),
            reason,
        });
        let _ = self
            .changes
            .send(Arc::new(IndexChange::Remove(instance.clone())));
        Some((instance, durable))
    }

    /// Expires `id` if its deadline has really passed (a heartbeat may have
    /// arrived since the expiry task looked).
    pub(crate) fn expire(&self, id: &InstanceId, now: u64) {
        let removed = {
            let _w = self.write_lock();
            let Some(liveness) = self.liveness_of(id) else {
                return;
            };
            if liveness.deadline_ms.load(Ordering::Acquire) > now {
                // A heartbeat came in after the expiry task popped the
                // entry: schedule it again, or it would never expire.
                self.expiry.schedule(id, &liveness);
                return;
            }
            self.remove_locked(id, DeregisterReason::Expired, true)
        };
        if let Some((instance, Some(durable))) = removed {
            tokio::spawn(async move {
                if let Err(e) = durable.await {
                    tracing::error!(
                        target: "fluxor_registry::registry",
                        id = %instance.id(), error = %e,
                        "failed to persist the expiry of an instance"
                    );
                }
            });
        }
    }

    /// Applies a change another process made through a shared backend.
    fn apply_remote(&self, change: RemoteChange) {
        let _w = self.write_lock();
        match change {
            RemoteChange::Upsert(instance) => {
                let previous = self.by_id.get(instance.id()).map(|e| e.value().clone());
                // The remote side owns this instance's liveness (a lease):
                // it is never expired locally.
                let liveness = match &previous {
                    Some(prev) => prev.liveness().clone(),
                    None => Liveness::new(instance.last_heartbeat(), expiry::NO_DEADLINE),
                };
                let instance = ServiceInstance::new(
                    instance.id().clone(),
                    instance.definition().clone(),
                    instance.version().cloned(),
                    instance.registered_at(),
                    instance.health(),
                    liveness,
                );
                if previous.as_ref() == Some(&instance) {
                    return;
                }
                let event = Event::Registered {
                    instance: instance.clone(),
                    replaced: previous.is_some(),
                };
                self.upsert_locked(instance, previous.as_ref(), Some(event));
            }
            RemoteChange::Remove { id, reason } => {
                self.remove_locked(&id, reason, false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_heartbeat_racing_expiry_keeps_the_instance_scheduled() {
        let registry = ServiceRegistry::builder().build().await.unwrap();
        let instance = registry
            .register(
                ServiceDefinition::new("svc", "localhost", 1)
                    .ttl(std::time::Duration::from_secs(1)),
            )
            .await
            .unwrap();
        let inner = &registry.inner;
        // The expiry task pops the entry as due at 1,000 ms …
        let due = inner.expiry.due(1_000, |id| inner.liveness_of(id));
        assert_eq!(due, vec![instance.id().clone()]);
        assert_eq!(inner.expiry.next_deadline(), None);
        // … a heartbeat moves the deadline before it re-checks …
        instance.liveness().beat(system_now(), 5_000);
        inner.expire(instance.id(), 1_000);
        // … so the instance stays, and stays scheduled.
        assert!(registry.get_service(instance.id()).is_some());
        assert_eq!(inner.expiry.next_deadline(), Some(5_000));
    }
}
