//! [`EtcdBackend`]: leases, the cache's watch, resync and re-registration.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use etcd_client::{
    Client, ConnectOptions, EventType, GetOptions, KeyValue, PutOptions, WatchOptions,
};
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::keys::{Keys, Malformed};
use crate::event::DeregisterReason;
use crate::instance::{InstanceId, ServiceInstance};
use crate::registry::backend::{
    Backend, BackendError, BackendStatus, BoxFuture, BoxStream, DroppedRecord, Recovered,
    RecoveryReport, RemoteChange,
};

const TARGET: &str = "fluxor_registry::etcd";

/// How to reach etcd and how to use it; for
/// [`RegistryBuilder::etcd_options`](crate::RegistryBuilder::etcd_options).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EtcdOptions {
    /// The client endpoints, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// The key prefix every registry sharing the list uses (default
    /// `/fluxor`); instances live under `{prefix}/services/`.
    pub prefix: String,
    /// The lease TTL of instances registered without a TTL (default 10 s);
    /// the backend keeps those leases alive by itself, at a third of it.
    pub default_lease_ttl: Duration,
    /// HTTP/2 keep-alive ping interval (default 1 s) and how long a ping may
    /// go unanswered (default 2 s) before the connection counts as dead, so
    /// a frozen etcd is noticed.
    pub keep_alive: (Duration, Duration),
    /// Timeout of each request and of connecting (default 2 s).
    pub request_timeout: Duration,
    /// The longest wait between reconnection attempts (default 1 s); the
    /// first is after 20 ms, doubling.
    pub max_backoff: Duration,
}

impl EtcdOptions {
    /// Options for `endpoints`, with the defaults above.
    pub fn new<I, S>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: "/fluxor".to_owned(),
            default_lease_ttl: Duration::from_secs(10),
            keep_alive: (Duration::from_secs(1), Duration::from_secs(2)),
            request_timeout: Duration::from_secs(2),
            max_backoff: Duration::from_secs(1),
        }
    }

    /// Sets the key prefix.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets the lease TTL of instances registered without a TTL.
    #[must_use]
    pub fn default_lease_ttl(mut self, ttl: Duration) -> Self {
        self.default_lease_ttl = ttl;
        self
    }
}

/// An etcd request failed.
#[derive(Debug, thiserror::Error)]
#[error("etcd {op}: {source}")]
pub struct EtcdError {
    op: &'static str,
    #[source]
    source: etcd_client::Error,
}

impl EtcdError {
    /// What was being done (`"connect"`, `"put"`, `"grant lease"`, …).
    pub fn op(&self) -> &'static str {
        self.op
    }
}

fn err(op: &'static str) -> impl FnOnce(etcd_client::Error) -> BackendError {
    move |source| BackendError::Other(Box::new(EtcdError { op, source }))
}

/// Keeps the registry in etcd, shared by every registry on the same prefix.
///
/// Built by [`RegistryBuilder::etcd`](crate::RegistryBuilder::etcd); see the
/// [module docs](crate::registry::etcd) for the key schema and the fault
/// handling.
pub struct EtcdBackend {
    shared: Arc<Shared>,
    changes: Mutex<Option<mpsc::UnboundedReceiver<RemoteChange>>>,
    tasks: Mutex<Vec<AbortHandle>>,
}

struct Shared {
    client: Client,
    keys: Keys,
    options: EtcdOptions,
    /// This process's instances, by id.
    owned: Mutex<HashMap<InstanceId, Owned>>,
    /// What etcd holds under the prefix, as far as the watch has seen: the
    /// base of resync diffs and of lease lookups.
    seen: Mutex<HashMap<String, Seen>>,
    /// Leases this process granted whose keys the watch may still report:
    /// an event carrying one is the echo of our own write, which the
    /// registry applied already, even if the instance was deregistered
    /// since (then its deletion follows).
    my_leases: Mutex<HashSet<i64>>,
    status: Mutex<BackendStatus>,
    writes: mpsc::UnboundedSender<Write>,
    changes: mpsc::UnboundedSender<RemoteChange>,
}

/// One of this process's instances.
struct Owned {
    instance: ServiceInstance,
    key: String,
    /// Its lease; 0 while it has none (a put failed, or the lease was lost).
    lease: i64,
    /// The instance TTL; `None` when the backend keeps the lease alive.
    ttl: Option<Duration>,
    last_beat: Instant,
    /// A re-registration is queued (at most one at a time).
    reasserting: bool,
    /// A put is under way: no lease yet is not a failure.
    in_flight: bool,
}

struct Seen {
    id: InstanceId,
    lease: i64,
    value: Vec<u8>,
}

enum Write {
    Put(ServiceInstance, oneshot::Sender<Result<(), BackendError>>),
    Delete(ServiceInstance, oneshot::Sender<Result<(), BackendError>>),
    /// Give an owned instance a new lease and put it again.
    Reassert(InstanceId),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn lease_secs(ttl: Duration) -> i64 {
    // etcd leases count whole seconds: round up, so the lease never ends
    // before the instance's TTL.
    let ms = ttl.as_millis().max(1);
    i64::try_from(ms.div_ceil(1000)).unwrap_or(i64::MAX)
}

// === impl EtcdBackend ===

impl EtcdBackend {
    /// Connects to etcd. The connection is checked by the first read, in
    /// [`Backend::load`].
    pub async fn connect(options: EtcdOptions) -> Result<Self, BackendError> {
        let connect = ConnectOptions::new()
            .with_keep_alive(options.keep_alive.0, options.keep_alive.1)
            .with_keep_alive_while_idle(true)
            .with_timeout(options.request_timeout)
            .with_connect_timeout(options.request_timeout);
        let client = Client::connect(&options.endpoints, Some(connect))
            .await
            .map_err(err("connect"))?;
        let (writes, writes_rx) = mpsc::unbounded_channel();
        let (changes, changes_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            client,
            keys: Keys::new(&options.prefix),
            options,
            owned: Mutex::new(HashMap::new()),
            seen: Mutex::new(HashMap::new()),
            my_leases: Mutex::new(HashSet::new()),
            status: Mutex::new(BackendStatus::default()),
            writes,
            changes,
        });
        let tasks = vec![
            tokio::spawn(writer(shared.clone(), writes_rx)).abort_handle(),
            tokio::spawn(keep_alive(Arc::downgrade(&shared))).abort_handle(),
        ];
        Ok(Self {
            shared,
            changes: Mutex::new(Some(changes_rx)),
            tasks: Mutex::new(tasks),
        })
    }
}

impl Drop for EtcdBackend {
    fn drop(&mut self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

impl fmt::Debug for EtcdBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdBackend")
            .field("endpoints", &self.shared.options.endpoints)
            .field("prefix", &self.shared.options.prefix)
            .finish_non_exhaustive()
    }
}

impl Backend for EtcdBackend {
    fn name(&self) -> &'static str {
        "etcd"
    }

    fn load(&self) -> BoxFuture<'_, Result<Recovered, BackendError>> {
        Box::pin(async move {
            let shared = &self.shared;
            let (kvs, revision) = shared.read_all().await?;
            let mut recovered = Recovered {
                instances: Vec::new(),
                report: RecoveryReport::default(),
            };
            {
                let mut seen = lock(&shared.seen);
                for kv in &kvs {
                    recovered.report.records_read += 1;
                    match shared.keys.decode(kv.key(), kv.value()) {
                        Ok(instance) => {
                            seen.insert(
                                shared.keys.key(&instance),
                                Seen {
                                    id: instance.id().clone(),
                                    lease: kv.lease(),
                                    value: kv.value().to_vec(),
                                },
                            );
                            recovered.instances.push(instance);
                        }
                        Err(bad) => {
                            shared.reject(&bad);
                            recovered.report.dropped.push(DroppedRecord {
                                offset: u64::try_from(kv.mod_revision()).unwrap_or(0),
                                len: u64::try_from(kv.value().len()).unwrap_or(u64::MAX),
                                reason: format!("{}: {}", bad.key, bad.reason),
                            });
                        }
                    }
                }
            }
            recovered.report.instances = recovered.instances.len() as u64;
            let task = tokio::spawn(cache(Arc::downgrade(shared), revision));
            lock(&self.tasks).push(task.abort_handle());
            Ok(recovered)
        })
    }

    fn put(&self, instance: &ServiceInstance) -> BoxFuture<'static, Result<(), BackendError>> {
        let (tx, rx) = oneshot::channel();
        let _ = self.shared.writes.send(Write::Put(instance.clone(), tx));
        Box::pin(done(rx))
    }

    fn delete(&self, instance: &ServiceInstance) -> BoxFuture<'static, Result<(), BackendError>> {
        let (tx, rx) = oneshot::channel();
        let _ = self.shared.writes.send(Write::Delete(instance.clone(), tx));
        Box::pin(done(rx))
    }

    fn heartbeat(
        &self,
        instance: &ServiceInstance,
    ) -> BoxFuture<'static, Result<(), BackendError>> {
        let shared = self.shared.clone();
        let id = instance.id().clone();
        let key = shared.keys.key(instance);
        let lease = {
            let mut owned = lock(&shared.owned);
            match owned.get_mut(&id) {
                Some(own) => {
                    own.last_beat = Instant::now();
                    Some(own.lease)
                }
                None => None,
            }
        };
        let is_own = lease.is_some();
        let lease = lease.or_else(|| lock(&shared.seen).get(&key).map(|s| s.lease));
        Box::pin(async move {
            match lease {
                // Own instance without a lease: a put is pending.
                Some(0) if is_own => {
                    shared.request_reassert(&id);
                    Ok(())
                }
                Some(0) | None => Ok(()),
                Some(lease) => match shared.keep_alive_once(lease).await? {
                    true => Ok(()),
                    false if is_own => {
                        shared.request_reassert(&id);
                        Ok(())
                    }
                    // Someone else's lease is gone: the watch reports the
                    // removal.
                    false => Ok(()),
                },
            }
        })
    }

    fn remote_changes(&self) -> Option<BoxStream<'static, RemoteChange>> {
        let rx = lock(&self.changes).take()?;
        Some(Box::pin(
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
        ))
    }

    fn owns_liveness(&self) -> bool {
        true
    }

    fn status(&self) -> BackendStatus {
        lock(&self.shared.status).clone()
    }
}

async fn done(rx: oneshot::Receiver<Result<(), BackendError>>) -> Result<(), BackendError> {
    match rx.await {
        Ok(result) => result,
        Err(_) => Err(BackendError::Other("the etcd backend has shut down".into())),
    }
}

// === impl Shared ===

impl Shared {
    async fn read_all(&self) -> Result<(Vec<KeyValue>, i64), BackendError> {
        let mut kv = self.client.kv_client();
        let mut resp = kv
            .get(self.keys.services(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(err("range read"))?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        Ok((resp.take_kvs(), revision))
    }

    /// Refreshes `lease` once; `Ok(false)` if etcd no longer has it.
    async fn keep_alive_once(&self, lease: i64) -> Result<bool, BackendError> {
        let mut leases = self.client.lease_client();
        match leases.keep_alive(lease).await {
            Ok(_) => Ok(true),
            Err(etcd_client::Error::LeaseKeepAliveError(e)) if e.contains("not found") => Ok(false),
            Err(e) => Err(err("lease keep-alive")(e)),
        }
    }

    fn reject(&self, bad: &Malformed) {
        tracing::warn!(
            target: TARGET,
            key = %bad.key, reason = %bad.reason,
            "skipping a malformed value under the registry prefix"
        );
        let mut status = lock(&self.status);
        status.rejected += 1;
        status.last_rejected = Some(format!("{}: {}", bad.key, bad.reason));
    }

    fn set_stale(&self, stale: bool) {
        let mut status = lock(&self.status);
        match (stale, status.stale_since) {
            (true, None) => status.stale_since = Some(SystemTime::now()),
            (false, Some(_)) => status.stale_since = None,
            _ => {}
        }
    }

    /// Queues a re-registration of an owned instance, unless one is queued.
    fn request_reassert(&self, id: &InstanceId) {
        let mut owned = lock(&self.owned);
        if let Some(own) = owned.get_mut(id)
            && !own.reasserting
            && !own.in_flight
        {
            own.reasserting = true;
            let _ = self.writes.send(Write::Reassert(id.clone()));
        }
    }

    /// An owned instance with a TTL, no lease and no heartbeat for a TTL:
    /// it expired while etcd could not tell anyone.
    fn expire_unleased(&self, id: &InstanceId) {
        let expired = {
            let mut owned = lock(&self.owned);
            let due = owned.get(id).is_some_and(|o| {
                o.lease == 0 && o.ttl.is_some_and(|ttl| o.last_beat.elapsed() >= ttl)
            });
            due && owned.remove(id).is_some()
        };
        if expired {
            self.emit(RemoteChange::Remove {
                id: id.clone(),
                reason: DeregisterReason::Expired,
            });
        }
    }

    fn emit(&self, change: RemoteChange) {
        let _ = self.changes.send(change);
    }

    /// A key under the prefix was put (by anyone, this process included).
    fn on_put(&self, kv: &KeyValue) {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let instance = match self.keys.decode(kv.key(), kv.value()) {
            Ok(instance) => instance,
            Err(bad) => {
                self.reject(&bad);
                // A key that was valid and now is not has left.
                self.on_delete(&key);
                return;
            }
        };
        let echo = lock(&self.my_leases).contains(&kv.lease());
        let mut seen = lock(&self.seen);
        let previous = seen.get(&key).map(|s| (s.lease, s.value != kv.value()));
        let changed = previous.is_none_or(|(_, changed)| changed);
        if let Some((old, _)) = previous.filter(|(old, _)| *old != kv.lease()) {
            // The key moved to another lease: no event carries the old one.
            lock(&self.my_leases).remove(&old);
        }
        seen.insert(
            key,
            Seen {
                id: instance.id().clone(),
                lease: kv.lease(),
                value: kv.value().to_vec(),
            },
        );
        drop(seen);
        if changed && !echo {
            self.emit(RemoteChange::Upsert(instance));
        }
    }

    /// A key under the prefix was deleted, or became unreadable.
    fn on_delete(&self, key: &str) {
        let Some(gone) = lock(&self.seen).remove(key) else {
            return;
        };
        lock(&self.my_leases).remove(&gone.lease);
        {
            let mut owned = lock(&self.owned);
            if let Some(own) = owned.get_mut(&gone.id) {
                if own.key != key {
                    // An old key of ours (the instance was renamed).
                    return;
                }
                let expired = own.ttl.is_some_and(|ttl| own.last_beat.elapsed() >= ttl);
                if !expired {
                    // Lease lost (an outage outlasted it, or someone
                    // revoked it) while the instance is alive: register it
                    // again, silently.
                    own.lease = 0;
                    if !own.reasserting {
                        own.reasserting = true;
                        let _ = self.writes.send(Write::Reassert(gone.id));
                    }
                    return;
                }
                owned.remove(&gone.id);
                drop(owned);
                self.emit(RemoteChange::Remove {
                    id: gone.id,
                    reason: DeregisterReason::Expired,
                });
                return;
            }
        }
        // The same id may still live under another key (a rename).
        if lock(&self.seen).values().any(|s| s.id == gone.id) {
            return;
        }
        self.emit(RemoteChange::Remove {
            id: gone.id,
            reason: DeregisterReason::Requested,
        });
    }

    /// Replaces what the cache holds with a full read, emitting only the
    /// differences. Returns the read's revision.
    async fn resync(&self) -> Result<i64, BackendError> {
        let (kvs, revision) = self.read_all().await?;
        let mut present = std::collections::HashSet::new();
        for kv in &kvs {
            present.insert(String::from_utf8_lossy(kv.key()).into_owned());
            let unchanged = lock(&self.seen)
                .get(&*String::from_utf8_lossy(kv.key()))
                .is_some_and(|s| s.value == kv.value() && s.lease == kv.lease());
            if !unchanged {
                self.on_put(kv);
            }
        }
        let missing: Vec<String> = lock(&self.seen)
            .keys()
            .filter(|k| !present.contains(*k))
            .cloned()
            .collect();
        for key in missing {
            self.on_delete(&key);
        }
        lock(&self.status).resyncs += 1;
        Ok(revision)
    }

    fn backoff(&self, current: &mut Duration) -> Duration {
        let wait = *current;
        *current = (*current * 2).min(self.options.max_backoff);
        wait
    }

    // --- writes ---

    /// Puts an owned instance. `fresh`: a registration (a sign of life), not
    /// a re-registration after a lost lease, which keeps the last heartbeat.
    async fn put(&self, instance: ServiceInstance, fresh: bool) -> Result<(), BackendError> {
        let id = instance.id().clone();
        let result = self.put_leased(instance, fresh).await;
        if let Some(own) = lock(&self.owned).get_mut(&id) {
            own.in_flight = false;
        }
        result
    }

    async fn put_leased(&self, instance: ServiceInstance, fresh: bool) -> Result<(), BackendError> {
        let id = instance.id().clone();
        let key = self.keys.key(&instance);
        let ttl = instance.ttl();
        let secs = lease_secs(ttl.unwrap_or(self.options.default_lease_ttl));
        let (previous, last_beat) = match lock(&self.owned).get(&id) {
            Some(own) => (Some((own.key.clone(), own.lease, own.ttl)), own.last_beat),
            None => (None, Instant::now()),
        };
        // Keep the lease when its TTL still fits.
        let reuse = previous
            .as_ref()
            .filter(|(_, lease, old_ttl)| *lease != 0 && *old_ttl == ttl)
            .map(|(_, lease, _)| *lease);
        let own = Owned {
            instance: instance.clone(),
            key: key.clone(),
            lease: reuse.unwrap_or(0),
            ttl,
            last_beat: if fresh { Instant::now() } else { last_beat },
            reasserting: false,
            in_flight: true,
        };
        lock(&self.owned).insert(id.clone(), own);
        let lease = match reuse {
            Some(lease) => lease,
            None => {
                let lease = self.grant(secs).await?;
                if let Some(own) = lock(&self.owned).get_mut(&id) {
                    own.lease = lease;
                }
                lease
            }
        };
        let mut kv = self.client.kv_client();
        if let Some((old_key, _, _)) = previous.as_ref().filter(|(k, _, _)| *k != key) {
            kv.delete(old_key.as_str(), None)
                .await
                .map_err(err("delete"))?;
        }
        let result = kv
            .put(
                key,
                super::keys::Keys::encode(&instance),
                Some(PutOptions::new().with_lease(lease)),
            )
            .await;
        if let Err(e) = result {
            if let Some(own) = lock(&self.owned).get_mut(&id) {
                own.lease = 0;
            }
            return Err(err("put")(e));
        }
        if let Some((_, old, _)) = previous.filter(|(_, old, _)| *old != 0 && *old != lease) {
            let _ = self.client.lease_client().revoke(old).await;
        }
        Ok(())
    }

    async fn grant(&self, secs: i64) -> Result<i64, BackendError> {
        let resp = self
            .client
            .lease_client()
            .grant(secs, None)
            .await
            .map_err(err("grant lease"))?;
        lock(&self.my_leases).insert(resp.id());
        Ok(resp.id())
    }

    async fn delete(&self, instance: ServiceInstance) -> Result<(), BackendError> {
        let own = lock(&self.owned).remove(instance.id());
        let key = own
            .as_ref()
            .map(|o| o.key.clone())
            .unwrap_or_else(|| self.keys.key(&instance));
        self.client
            .kv_client()
            .delete(key, None)
            .await
            .map_err(err("delete"))?;
        if let Some(lease) = own.map(|o| o.lease).filter(|l| *l != 0) {
            // A lease that already expired is fine.
            let _ = self.client.lease_client().revoke(lease).await;
        }
        Ok(())
    }

    async fn reassert(&self, id: InstanceId) {
        let instance = {
            let mut owned = lock(&self.owned);
            let Some(own) = owned.get_mut(&id) else {
                return;
            };
            own.reasserting = false;
            if own.ttl.is_some_and(|ttl| own.last_beat.elapsed() >= ttl) {
                // Its heartbeats stopped: it is expiring, not coming back.
                own.lease = 0;
                drop(owned);
                self.expire_unleased(&id);
                return;
            }
            own.lease = 0;
            own.instance.clone()
        };
        match self.put(instance, false).await {
            Ok(()) => tracing::info!(target: TARGET, %id, "re-registered with a new lease"),
            Err(e) => {
                tracing::debug!(target: TARGET, %id, error = %e, "re-registration failed; will retry")
            }
        }
    }
}

// === tasks ===

/// Applies writes one at a time, in the order the registry made them.
async fn writer(shared: Arc<Shared>, mut writes: mpsc::UnboundedReceiver<Write>) {
    while let Some(write) = writes.recv().await {
        match write {
            Write::Put(instance, done) => {
                let _ = done.send(shared.put(instance, true).await);
            }
            Write::Delete(instance, done) => {
                let _ = done.send(shared.delete(instance).await);
            }
            Write::Reassert(id) => shared.reassert(id).await,
        }
    }
}

/// Keeps the leases of instances without a TTL alive, and retries the puts
/// of owned instances that have no lease.
async fn keep_alive(shared: std::sync::Weak<Shared>) {
    let period = match shared.upgrade() {
        Some(s) => (s.options.default_lease_ttl / 3).max(Duration::from_millis(50)),
        None => return,
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let leases: Vec<(InstanceId, i64, bool)> = lock(&shared.owned)
            .iter()
            .filter(|(_, o)| !o.in_flight)
            .map(|(id, o)| {
                let alive = o.ttl.is_none_or(|ttl| o.last_beat.elapsed() < ttl);
                (id.clone(), o.lease, alive)
            })
            .collect();
        for (id, lease, alive) in leases {
            if lease == 0 {
                if alive {
                    shared.request_reassert(&id);
                } else {
                    shared.expire_unleased(&id);
                }
                continue;
            }
            let has_ttl = lock(&shared.owned)
                .get(&id)
                .is_some_and(|o| o.ttl.is_some());
            if has_ttl {
                // Its owner's heartbeats keep it alive.
                continue;
            }
            match shared.keep_alive_once(lease).await {
                Ok(true) => {}
                Ok(false) => shared.request_reassert(&id),
                Err(e) => {
                    tracing::debug!(target: TARGET, %id, error = %e, "lease keep-alive failed");
                }
            }
        }
    }
}

/// How a watch ended.
enum Ended {
    /// The stream broke: watch again from the last revision + 1.
    Broken,
    /// The start revision was compacted: resync with a full read.
    Compacted,
}

/// Follows the prefix from `revision + 1` forever, reconnecting and
/// resyncing as needed.
async fn cache(shared: std::sync::Weak<Shared>, mut revision: i64) {
    let mut backoff_at = Duration::from_millis(20);
    let mut needs_resync = false;
    loop {
        let Some(s) = shared.upgrade() else { return };
        if needs_resync {
            match s.resync().await {
                Ok(rev) => {
                    tracing::info!(target: TARGET, revision = rev, "resynced the cache after a compaction");
                    revision = rev;
                    needs_resync = false;
                }
                Err(e) => {
                    s.set_stale(true);
                    tracing::debug!(target: TARGET, error = %e, "resync failed");
                    let wait = s.backoff(&mut backoff_at);
                    drop(s);
                    tokio::time::sleep(wait).await;
                    continue;
                }
            }
        }
        match watch_once(&s, &mut revision, &mut backoff_at).await {
            Ended::Broken => {}
            Ended::Compacted => needs_resync = true,
        }
        s.set_stale(true);
        let wait = s.backoff(&mut backoff_at);
        drop(s);
        tokio::time::sleep(wait).await;
    }
}

async fn watch_once(shared: &Shared, revision: &mut i64, backoff_at: &mut Duration) -> Ended {
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(*revision + 1)
        .with_progress_notify();
    let mut stream = match shared
        .client
        .watch_client()
        .watch(shared.keys.services(), Some(options))
        .await
    {
        Ok(stream) => stream,
        Err(e) => {
            tracing::debug!(target: TARGET, error = %e, "cannot open the watch");
            return Ended::Broken;
        }
    };
    loop {
        let resp = match stream.next().await {
            Some(Ok(resp)) => resp,
            Some(Err(e)) => {
                tracing::warn!(target: TARGET, error = %e, revision = *revision, "watch broke; resuming");
                return Ended::Broken;
            }
            None => return Ended::Broken,
        };
        if resp.compact_revision() > 0 {
            tracing::warn!(
                target: TARGET,
                compacted = resp.compact_revision(), revision = *revision,
                "watch start revision was compacted; resyncing"
            );
            return Ended::Compacted;
        }
        if resp.canceled() {
            return Ended::Broken;
        }
        if resp.created() {
            let head = resp.header().map(|h| h.revision()).unwrap_or(0);
            if head < *revision {
                // The store is older than what we saw: etcd lost its data.
                tracing::warn!(target: TARGET, head, revision = *revision, "etcd went back in time; resyncing");
                return Ended::Compacted;
            }
            shared.set_stale(false);
            *backoff_at = Duration::from_millis(20);
            continue;
        }
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            match event.event_type() {
                EventType::Put => shared.on_put(kv),
                EventType::Delete => shared.on_delete(&String::from_utf8_lossy(kv.key())),
            }
            *revision = (*revision).max(kv.mod_revision());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_ttl_rounds_up_to_whole_seconds() {
        assert_eq!(lease_secs(Duration::from_millis(1)), 1);
        assert_eq!(lease_secs(Duration::from_millis(1000)), 1);
        assert_eq!(lease_secs(Duration::from_millis(1001)), 2);
        assert_eq!(lease_secs(Duration::from_secs(30)), 30);
        assert_eq!(lease_secs(Duration::ZERO), 1);
    }
}
