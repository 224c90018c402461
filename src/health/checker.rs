use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::runtime::Handle;
use tokio::sync::{Notify, Semaphore, broadcast};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::config::{CheckKind, CheckSpec, HealthCheckerConfig, HealthConfig, Probe};
use super::error::HealthError;
use super::http::{self, HttpClient};
use super::output::{Outcome, truncate};
use super::report::{CheckReport, CheckResult, HealthReport};
use super::state::{CheckState, aggregate};
use super::ttl::{self, Refresh};
use super::{exec, tcp};
use crate::event::{DeregisterReason, Event, SubscriptionError};
use crate::instance::{HealthStatus, InstanceId, Protocol, ServiceInstance};
use crate::registry::ServiceRegistry;

/// How many status changes a [`HealthFilterLayer`](super::HealthFilterLayer)
/// may fall behind before it re-reads every status.
const CHANGE_CAPACITY: usize = 4096;
/// How many due checks the scheduler takes per lock.
const BATCH: usize = 256;

/// Runs health checks for a registry's instances and writes their status to
/// it; see the [module docs](super).
///
/// A cheap-to-clone handle: clones share one scheduler. The scheduler starts
/// with the first [`start_health_checks`](Self::start_health_checks) and
/// stops when the last handle is dropped.
#[derive(Clone)]
pub struct HealthChecker {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    registry: ServiceRegistry,
    config: HealthCheckerConfig,
    handle: Option<Handle>,
    runner: Runner,
    state: Mutex<State>,
    notify: Arc<Notify>,
    semaphore: Arc<Semaphore>,
    changes: broadcast::Sender<(InstanceId, HealthStatus)>,
    tasks: OnceLock<Vec<AbortHandle>>,
    stats: StatsInner,
}

struct State {
    instances: HashMap<InstanceId, Managed>,
    queue: BinaryHeap<Reverse<Due>>,
    rng: SmallRng,
    next_generation: u64,
    next_seq: u64,
    /// When the scheduler means to wake next; an earlier push wakes it.
    wake_at: Option<Instant>,
}

/// One scheduled run of one check.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Due {
    at: Instant,
    seq: u64,
    id: InstanceId,
    generation: u64,
    check: usize,
}

struct Managed {
    instance: ServiceInstance,
    generation: u64,
    checks: Vec<Slot>,
    status: HealthStatus,
    deregister_critical_after: Option<Duration>,
    deregistering: bool,
}

struct Slot {
    name: String,
    spec: Arc<CheckSpec>,
    interval: Duration,
    timeout: Duration,
    state: CheckState,
    last: Option<CheckResult>,
    started: Instant,
    /// TTL checks: the last explicit update, and which refresh/expiry was
    /// last fed to the state machine.
    refresh: Option<Refresh>,
    /// How many explicit updates it has had: two at one instant differ.
    refreshes: u64,
    ttl_seen: Option<(u64, Option<Instant>, bool)>,
    /// HTTP checks: the request URI, built once per address.
    uri: Option<::http::Uri>,
    #[cfg(feature = "grpc")]
    channel: Option<tonic::transport::Channel>,
}

/// A check run taken off the queue, to run outside the lock.
struct Job {
    id: InstanceId,
    generation: u64,
    check: usize,
    due: Instant,
    instance: ServiceInstance,
    spec: Arc<CheckSpec>,
    timeout: Duration,
    uri: Option<::http::Uri>,
    #[cfg(feature = "grpc")]
    channel: Option<tonic::transport::Channel>,
}

/// What runs a check: cheap to clone, holds no reference to the checker,
/// so running checks never keep a dropped checker alive.
#[derive(Clone)]
struct Runner {
    http: HttpClient,
    max_output: usize,
}

/// What to do after the state lock is released.
#[derive(Default)]
#[must_use]
struct Followup {
    deregister: Option<InstanceId>,
}

// === impl HealthChecker ===

impl HealthChecker {
    /// A checker writing to `registry`. Cheap: no task starts until the first
    /// [`start_health_checks`](Self::start_health_checks).
    pub fn new(registry: ServiceRegistry, config: HealthCheckerConfig) -> Self {
        let rng = match config.seed {
            Some(seed) => SmallRng::seed_from_u64(seed),
            None => SmallRng::from_rng(&mut rand::rng()),
        };
        let (changes, _) = broadcast::channel(CHANGE_CAPACITY);
        let permits = config.max_concurrency.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            shared: Arc::new(Shared {
                registry,
                handle: Handle::try_current().ok(),
                runner: Runner {
                    http: http::client(),
                    max_output: config.max_output,
                },
                state: Mutex::new(State {
                    instances: HashMap::new(),
                    queue: BinaryHeap::new(),
                    rng,
                    next_generation: 0,
                    next_seq: 0,
                    wake_at: None,
                }),
                notify: Arc::new(Notify::new()),
                semaphore: Arc::new(Semaphore::new(permits)),
                changes,
                tasks: OnceLock::new(),
                stats: StatsInner::default(),
                config,
            }),
        }
    }

    /// The checker's settings.
    pub fn config(&self) -> &HealthCheckerConfig {
        &self.shared.config
    }

    /// Starts checking `instance` with `config`'s checks until
    /// [`stop_health_checks`](Self::stop_health_checks) or until the
    /// instance leaves the registry. Replaces any checks already running for
    /// it.
    ///
    /// With checks, the instance is [`Unknown`](HealthStatus::Unknown), so
    /// without traffic, until its checks first pass; with none, it is
    /// passing. Fails with a typed error on an invalid check or config, an
    /// instance that is not registered, or outside a tokio runtime.
    pub fn start_health_checks(
        &self,
        instance: &ServiceInstance,
        config: HealthConfig,
    ) -> Result<(), HealthError> {
        self.shared.config.validate()?;
        let now = Instant::now();
        let slots = self.shared.slots(instance, &config, now)?;
        self.shared.ensure_started()?;
        let shared = &self.shared;
        let mut state = shared.lock();
        // Read under our lock: a deregistration after this is seen by the
        // listener, which was subscribed before.
        let current = shared
            .registry
            .get_service(instance.id())
            .ok_or_else(|| HealthError::NotRegistered(instance.id().clone()))?;
        let generation = state.next_generation;
        state.next_generation += 1;
        let status = if slots.is_empty() {
            HealthStatus::Passing
        } else {
            HealthStatus::Unknown
        };
        for (index, slot) in slots.iter().enumerate() {
            let at = match slot.spec.probe {
                Probe::Ttl(ttl) => now + ttl.min(slot.interval),
                _ => now + state.first_delay(slot.interval, shared.config.jitter),
            };
            state.push(at, instance.id().clone(), generation, index);
        }
        let id = current.id().clone();
        state.instances.insert(
            id.clone(),
            Managed {
                instance: current,
                generation,
                checks: slots,
                status,
                deregister_critical_after: config.deregister_critical_after,
                deregistering: false,
            },
        );
        shared.publish(&id, status);
        drop(state);
        shared.notify.notify_one();
        Ok(())
    }

    /// Stops the checks of `id`; returns whether any were running. The
    /// instance, if still registered, goes back to passing (an instance with
    /// no checks counts as passing).
    pub fn stop_health_checks(&self, id: &InstanceId) -> bool {
        let mut state = self.shared.lock();
        let stopped = state.instances.remove(id).is_some();
        if stopped && self.shared.registry.get_service(id).is_some() {
            self.shared.publish(id, HealthStatus::Passing);
        }
        stopped
    }

    /// The current health of `id` as its running checks see it: the
    /// aggregate and each check's status, last result, output, time and
    /// consecutive counts. `None` if no checks run for it.
    pub fn get_health_status(&self, id: &InstanceId) -> Option<HealthReport> {
        let state = self.shared.lock();
        let managed = state.instances.get(id)?;
        Some(HealthReport {
            instance: id.clone(),
            status: managed.status,
            checks: managed
                .checks
                .iter()
                .map(|slot| CheckReport {
                    name: slot.name.clone(),
                    kind: slot.spec.kind(),
                    status: slot.state.status(),
                    last: slot.last.clone(),
                    consecutive_successes: slot.state.consecutive_successes(),
                    consecutive_failures: slot.state.consecutive_failures(),
                })
                .collect(),
        })
    }

    /// Runs `config`'s checks against `instance` once, now, and reports what
    /// each found (no thresholds; nothing is written to the registry). A TTL
    /// check reports the state of the running check of that name if there is
    /// one, else whether the instance sent a registry heartbeat within the
    /// TTL.
    pub async fn check_health(
        &self,
        instance: &ServiceInstance,
        config: &HealthConfig,
    ) -> Result<HealthReport, HealthError> {
        self.shared.config.validate()?;
        let now = Instant::now();
        let slots = self.shared.slots(instance, config, now)?;
        let runs = slots.iter().enumerate().map(|(index, slot)| {
            let shared = self.shared.clone();
            let job = Job {
                id: instance.id().clone(),
                generation: 0,
                check: index,
                due: now,
                instance: instance.clone(),
                spec: slot.spec.clone(),
                timeout: slot.timeout,
                uri: None,
                #[cfg(feature = "grpc")]
                channel: None,
            };
            let name = slot.name.clone();
            async move {
                let started = Instant::now();
                let outcome = match job.spec.probe {
                    Probe::Ttl(ttl) => shared.one_shot_ttl(&job.id, &name, ttl, started),
                    _ => {
                        let _permit = shared.semaphore.clone().acquire_owned().await;
                        shared.runner.run(&job).await
                    }
                };
                (outcome, started.elapsed())
            }
        });
        let outcomes = futures_util::future::join_all(runs).await;
        let checks: Vec<CheckReport> = slots
            .into_iter()
            .zip(outcomes)
            .map(|(slot, (outcome, took))| {
                let mut state = CheckState::new();
                state.observe(outcome.status, slot.spec.thresholds, now);
                CheckReport {
                    name: slot.name,
                    kind: slot.spec.kind(),
                    status: outcome.status,
                    consecutive_successes: state.consecutive_successes(),
                    consecutive_failures: state.consecutive_failures(),
                    last: Some(CheckResult {
                        status: outcome.status,
                        output: outcome.output,
                        at: SystemTime::now(),
                        took,
                    }),
                }
            })
            .collect();
        Ok(HealthReport {
            instance: instance.id().clone(),
            status: aggregate(checks.iter().map(|c| c.status)),
            checks,
        })
    }

    /// Marks the TTL check `check` of `id` passing, with `note` as its
    /// output, for one TTL from now.
    pub fn pass_ttl(
        &self,
        id: &InstanceId,
        check: &str,
        note: impl Into<String>,
    ) -> Result<(), HealthError> {
        self.update_ttl(id, check, HealthStatus::Passing, note.into())
    }

    /// Marks the TTL check `check` of `id` warning (healthy, degraded).
    pub fn warn_ttl(
        &self,
        id: &InstanceId,
        check: &str,
        note: impl Into<String>,
    ) -> Result<(), HealthError> {
        self.update_ttl(id, check, HealthStatus::Warning, note.into())
    }

    /// Marks the TTL check `check` of `id` critical.
    pub fn fail_ttl(
        &self,
        id: &InstanceId,
        check: &str,
        note: impl Into<String>,
    ) -> Result<(), HealthError> {
        self.update_ttl(id, check, HealthStatus::Critical, note.into())
    }

    fn update_ttl(
        &self,
        id: &InstanceId,
        check: &str,
        status: HealthStatus,
        note: String,
    ) -> Result<(), HealthError> {
        let shared = &self.shared;
        let followup = {
            let mut state = shared.lock();
            let managed = state
                .instances
                .get_mut(id)
                .ok_or_else(|| HealthError::NotChecked(id.clone()))?;
            let index = managed
                .checks
                .iter()
                .position(|s| s.name == check && s.spec.kind() == CheckKind::Ttl)
                .ok_or_else(|| HealthError::NoSuchTtlCheck {
                    instance: id.clone(),
                    check: check.to_owned(),
                })?;
            let now = Instant::now();
            let note = truncate(note, shared.config.max_output);
            let slot = &mut managed.checks[index];
            slot.refreshes += 1;
            slot.refresh = Some(Refresh {
                at: now,
                status,
                note,
            });
            // The check's pending tick (never later than the old deadline)
            // re-reads the new one; nothing to reschedule.
            shared.evaluate_ttl(managed, index, now)
        };
        shared.follow(followup);
        Ok(())
    }

    /// How the scheduler is doing: checks run and how late they started.
    pub fn stats(&self) -> CheckerStats {
        let instances = self.shared.lock().instances.len();
        self.shared.stats.snapshot(instances)
    }

    /// Starts [`stats`](Self::stats) afresh, e.g. for a measurement window.
    pub fn reset_stats(&self) {
        self.shared.stats.reset();
    }

    pub(crate) fn subscribe_changes(&self) -> broadcast::Receiver<(InstanceId, HealthStatus)> {
        self.shared.changes.subscribe()
    }

    /// The registry it writes statuses to.
    pub(crate) fn registry(&self) -> &ServiceRegistry {
        &self.shared.registry
    }

    /// The health to route by: the running checks' aggregate, else the
    /// registry's status, else `None` (not known to either).
    pub(crate) fn status_of(&self, id: &InstanceId) -> Option<HealthStatus> {
        if let Some(managed) = self.shared.lock().instances.get(id) {
            return Some(managed.status);
        }
        self.shared.registry.get_service(id).map(|i| i.health())
    }
}

impl fmt::Debug for HealthChecker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthChecker")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

// === impl Shared ===

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update leaves the state consistent before it can panic.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ensure_started(self: &Arc<Self>) -> Result<(), HealthError> {
        if self.tasks.get().is_some() {
            return Ok(());
        }
        let handle = match &self.handle {
            Some(handle) => handle.clone(),
            None => Handle::try_current().map_err(|_| HealthError::NoRuntime)?,
        };
        self.tasks.get_or_init(|| {
            let events = self.registry.subscribe();
            vec![
                handle.spawn(schedule(Arc::downgrade(self))).abort_handle(),
                handle
                    .spawn(follow_registry(Arc::downgrade(self), events))
                    .abort_handle(),
            ]
        });
        Ok(())
    }

    /// Validates `config` for `instance` and builds its check slots.
    fn slots(
        &self,
        instance: &ServiceInstance,
        config: &HealthConfig,
        now: Instant,
    ) -> Result<Vec<Slot>, HealthError> {
        let mut names = HashSet::new();
        let mut counts: HashMap<CheckKind, usize> = HashMap::new();
        let interval = if config.interval.is_zero() {
            self.config.interval
        } else {
            config.interval
        };
        let mut slots = Vec::with_capacity(config.checks.len());
        for spec in &config.checks {
            let name = match spec.check_name() {
                Some(name) => name.to_owned(),
                None => {
                    let n = counts.entry(spec.kind()).or_default();
                    *n += 1;
                    match *n {
                        1 => spec.kind().as_str().to_owned(),
                        n => format!("{}-{n}", spec.kind()),
                    }
                }
            };
            spec.validate(&name)?;
            if !names.insert(name.clone()) {
                return Err(HealthError::DuplicateCheck(name));
            }
            if let Probe::Http(_) = spec.probe
                && instance.protocol() == Protocol::Https
            {
                return Err(HealthError::Unsupported {
                    check: name,
                    instance: instance.id().clone(),
                    reason: "https needs TLS, which this build does not link".to_owned(),
                });
            }
            slots.push(Slot {
                name,
                spec: Arc::new(spec.clone()),
                interval: spec.interval.unwrap_or(interval),
                timeout: spec.timeout.unwrap_or(self.config.timeout),
                state: CheckState::new(),
                last: None,
                started: now,
                refresh: None,
                refreshes: 0,
                ttl_seen: None,
                uri: None,
                #[cfg(feature = "grpc")]
                channel: None,
            });
        }
        Ok(slots)
    }

    /// Sets `id`'s status in the registry and tells filters. Caller holds
    /// the state lock, so writes for one instance stay in order.
    fn publish(&self, id: &InstanceId, status: HealthStatus) {
        let _ = self.changes.send((id.clone(), status));
        if let Err(e) = self.registry.set_health_status(id, status) {
            tracing::debug!(target: "fluxor_registry::health", %id, error = %e, "status not written");
        }
    }

    /// Takes due checks off the queue. TTL checks are evaluated here (no
    /// I/O); the others are returned to run. Returns the next due time.
    fn take_due(
        &self,
        now: Instant,
        jobs: &mut Vec<Job>,
        capacity: usize,
    ) -> (Vec<Followup>, Option<Instant>) {
        let mut followups = Vec::new();
        let mut state = self.lock();
        while jobs.len() < capacity.min(BATCH) {
            match state.queue.peek() {
                Some(Reverse(due)) if due.at <= now => {}
                _ => break,
            }
            let Some(Reverse(due)) = state.queue.pop() else {
                break;
            };
            let State {
                instances,
                queue,
                next_seq,
                ..
            } = &mut *state;
            let Some(managed) = instances
                .get_mut(&due.id)
                .filter(|m| m.generation == due.generation)
            else {
                continue; // stopped or restarted since
            };
            let Some(slot) = managed.checks.get_mut(due.check) else {
                continue;
            };
            if let Probe::Ttl(_) = slot.spec.probe {
                let interval = slot.interval;
                followups.push(self.evaluate_ttl(managed, due.check, now));
                let deadline = managed.checks[due.check].ttl_deadline(now, self, &due.id);
                let at = deadline.map_or(now + interval, |d| d.min(now + interval));
                push(queue, next_seq, at, due.id, due.generation, due.check);
                continue;
            }
            // One lazily connecting channel per gRPC check, kept between
            // rounds (it reconnects by itself).
            if let Probe::Http(spec) = &slot.spec.probe
                && slot.uri.is_none()
            {
                slot.uri = http::url(&managed.instance, spec).parse().ok();
            }
            #[cfg(feature = "grpc")]
            if matches!(slot.spec.probe, Probe::Grpc(_)) && slot.channel.is_none() {
                slot.channel = super::grpc::channel(&managed.instance).ok();
            }
            jobs.push(Job {
                id: due.id.clone(),
                generation: due.generation,
                check: due.check,
                due: due.at,
                instance: managed.instance.clone(),
                spec: slot.spec.clone(),
                timeout: slot.timeout,
                uri: slot.uri.clone(),
                #[cfg(feature = "grpc")]
                channel: slot.channel.clone(),
            });
        }
        let next = state.queue.peek().map(|Reverse(d)| d.at);
        state.wake_at = next;
        (followups, next)
    }

    /// Feeds a finished run to its check and schedules the next.
    fn complete(&self, job: Job, outcome: Outcome, took: Duration) -> Followup {
        let now = Instant::now();
        let mut state = self.lock();
        let jitter = self.config.jitter;
        let next = {
            let State { instances, rng, .. } = &mut *state;
            let Some(managed) = instances
                .get_mut(&job.id)
                .filter(|m| m.generation == job.generation)
            else {
                return Followup::default();
            };
            let Some(slot) = managed.checks.get_mut(job.check) else {
                return Followup::default();
            };
            let delay = next_delay(rng, slot.interval, jitter);
            slot.record(outcome, took, now);
            now + delay
        };
        let followup = match state.instances.get_mut(&job.id) {
            Some(managed) => self.settle(managed, now),
            None => Followup::default(),
        };
        state.push(next, job.id, job.generation, job.check);
        if state.wake_at.is_none_or(|w| next < w) {
            state.wake_at = Some(next);
            self.notify.notify_one();
        }
        followup
    }

    /// After a check changed: recompute the aggregate, publish a change,
    /// and decide on `deregister_critical_after`.
    fn settle(&self, managed: &mut Managed, now: Instant) -> Followup {
        let status = aggregate(managed.checks.iter().map(|s| s.state.status()));
        if status != managed.status {
            managed.status = status;
            self.publish(managed.instance.id(), status);
        }
        let mut followup = Followup::default();
        if let Some(after) = managed.deregister_critical_after
            && !managed.deregistering
            && managed
                .checks
                .iter()
                .any(|s| s.state.critical_for(now).is_some_and(|d| d >= after))
        {
            managed.deregistering = true;
            followup.deregister = Some(managed.instance.id().clone());
        }
        followup
    }

    /// Evaluates TTL check `index` at `now`, feeding a new refresh or a new
    /// expiry to its state machine once.
    fn evaluate_ttl(&self, managed: &mut Managed, index: usize, now: Instant) -> Followup {
        let id = managed.instance.id().clone();
        let heartbeat = self.registry.last_heartbeat_instant(&id);
        let Some(slot) = managed.checks.get_mut(index) else {
            return Followup::default();
        };
        let Probe::Ttl(ttl) = slot.spec.probe else {
            return Followup::default();
        };
        let verdict = ttl::evaluate(ttl, slot.started, slot.refresh.as_ref(), heartbeat, now);
        let Some(outcome) = verdict.outcome else {
            return Followup::default();
        };
        // Each refresh and each expiry is one result, however often it is
        // looked at.
        let key = (slot.refreshes, verdict.since, verdict.expired);
        if slot.ttl_seen != Some(key) {
            slot.ttl_seen = Some(key);
            slot.record(outcome, Duration::ZERO, now);
        }
        self.settle(managed, now)
    }

    fn one_shot_ttl(&self, id: &InstanceId, name: &str, ttl: Duration, now: Instant) -> Outcome {
        {
            let state = self.lock();
            if let Some(slot) = state
                .instances
                .get(id)
                .and_then(|m| m.checks.iter().find(|s| s.name == name))
                .filter(|s| s.spec.kind() == CheckKind::Ttl)
                && let Some(last) = &slot.last
            {
                return Outcome {
                    status: slot.state.status(),
                    output: last.output.clone(),
                };
            }
        }
        let heartbeat = self.registry.last_heartbeat_instant(id);
        match heartbeat {
            Some(at) if now < at + ttl => Outcome {
                status: HealthStatus::Passing,
                output: format!("registry heartbeat {:?} ago", now - at),
            },
            _ => Outcome::critical(format!("TTL expired: no update within {ttl:?}")),
        }
    }

    fn follow(self: &Arc<Self>, followup: Followup) {
        if let Some(id) = followup.deregister {
            let registry = self.registry.clone();
            let spawn = self.handle.clone().or_else(|| Handle::try_current().ok());
            if let Some(handle) = spawn {
                handle.spawn(async move {
                    tracing::info!(target: "fluxor_registry::health", %id, "critical for too long; deregistering");
                    if let Err(e) = registry
                        .deregister_because(&id, DeregisterReason::Critical)
                        .await
                    {
                        tracing::error!(target: "fluxor_registry::health", %id, error = %e, "deregistration failed");
                    }
                });
            }
        }
    }

    /// The registry lost `id`: drop its checks without writing a status.
    fn forget(&self, id: &InstanceId) {
        self.lock().instances.remove(id);
    }

    /// The registry re-registered `instance` in place: check its new address.
    fn refresh_instance(&self, instance: &ServiceInstance) {
        let mut state = self.lock();
        if let Some(managed) = state.instances.get_mut(instance.id()) {
            if managed.instance.authority() != instance.authority() {
                for slot in &mut managed.checks {
                    slot.uri = None;
                    #[cfg(feature = "grpc")]
                    {
                        slot.channel = None;
                    }
                }
            }
            managed.instance = instance.clone();
        }
    }

    /// After missing registry events: drop checks of instances gone from it.
    fn resync(&self) {
        let mut state = self.lock();
        let registry = &self.registry;
        state
            .instances
            .retain(|id, _| registry.get_service(id).is_some());
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(tasks) = self.tasks.get() {
            for task in tasks {
                task.abort();
            }
        }
    }
}

// === impl Runner ===

impl Runner {
    /// Runs one check, within its timeout.
    async fn run(&self, job: &Job) -> Outcome {
        let max = self.max_output;
        let timeout = job.timeout;
        let timed_out = || {
            Outcome::critical(format!(
                "{} check timed out after {timeout:?}",
                job.spec.kind()
            ))
        };
        match &job.spec.probe {
            Probe::Http(spec) => tokio::time::timeout(
                timeout,
                http::probe(&self.http, spec, &job.instance, job.uri.as_ref(), max),
            )
            .await
            .unwrap_or_else(|_| timed_out()),
            Probe::Tcp => tokio::time::timeout(timeout, tcp::probe(&job.instance))
                .await
                .unwrap_or_else(|_| timed_out()),
            Probe::Exec(argv) => exec::probe(argv, &job.instance, timeout, max).await,
            Probe::Ttl(_) => Outcome::critical("a ttl check is not run".to_owned()),
            #[cfg(feature = "grpc")]
            Probe::Grpc(service) => {
                let channel = match &job.channel {
                    Some(channel) => channel.clone(),
                    None => match super::grpc::channel(&job.instance) {
                        Ok(channel) => channel,
                        Err(e) => return Outcome::critical(e),
                    },
                };
                let authority = job.instance.authority();
                tokio::time::timeout(timeout, super::grpc::probe(channel, service, &authority))
                    .await
                    .unwrap_or_else(|_| timed_out())
            }
            #[cfg(not(feature = "grpc"))]
            Probe::Grpc(_) => Outcome::critical("grpc checks need the `grpc` feature".to_owned()),
        }
    }
}

// === impl State / Slot ===

impl State {
    fn push(&mut self, at: Instant, id: InstanceId, generation: u64, check: usize) {
        push(
            &mut self.queue,
            &mut self.next_seq,
            at,
            id,
            generation,
            check,
        );
    }

    fn first_delay(&mut self, interval: Duration, jitter: f64) -> Duration {
        if jitter <= 0.0 {
            return Duration::ZERO;
        }
        interval.mul_f64(jitter * self.rng.random_range(0.0..1.0))
    }
}

fn push(
    queue: &mut BinaryHeap<Reverse<Due>>,
    seq: &mut u64,
    at: Instant,
    id: InstanceId,
    generation: u64,
    check: usize,
) {
    *seq += 1;
    queue.push(Reverse(Due {
        at,
        seq: *seq,
        id,
        generation,
        check,
    }));
}

/// `interval ± jitter/2 × interval`.
fn next_delay(rng: &mut SmallRng, interval: Duration, jitter: f64) -> Duration {
    if jitter <= 0.0 {
        return interval;
    }
    interval.mul_f64(1.0 + jitter * (rng.random_range(0.0..1.0) - 0.5))
}

impl Slot {
    fn record(&mut self, outcome: Outcome, took: Duration, now: Instant) {
        self.state
            .observe(outcome.status, self.spec.thresholds, now);
        self.last = Some(CheckResult {
            status: outcome.status,
            output: outcome.output,
            at: SystemTime::now(),
            took,
        });
    }

    /// When this TTL check next expires if nothing refreshes it.
    fn ttl_deadline(&self, now: Instant, shared: &Shared, id: &InstanceId) -> Option<Instant> {
        let Probe::Ttl(ttl) = self.spec.probe else {
            return None;
        };
        let heartbeat = shared.registry.last_heartbeat_instant(id);
        ttl::evaluate(ttl, self.started, self.refresh.as_ref(), heartbeat, now).next
    }
}

// === tasks ===

/// The scheduler: one task for every check of every instance. It sleeps
/// until the earliest due check, and runs at most `max_concurrency` checks
/// at once, itself: no task per check, so nothing grows with the number of
/// instances but the timer queue.
async fn schedule(weak: Weak<Shared>) {
    let mut jobs = Vec::with_capacity(BATCH);
    let mut running = FuturesUnordered::new();
    // One timer entry, moved with `reset`, rather than a new one per wake.
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    loop {
        let Some(shared) = weak.upgrade() else {
            return;
        };
        let max = shared.config.max_concurrency.max(1);
        let now = Instant::now();
        let room = max.saturating_sub(running.len());
        let (followups, next) = shared.take_due(now, &mut jobs, room);
        for followup in followups {
            shared.follow(followup);
        }
        for job in jobs.drain(..) {
            let lateness = Instant::now().saturating_duration_since(job.due);
            shared.stats.record_start(lateness);
            running.push(run_job(weak.clone(), shared.runner.clone(), job));
        }
        // A `notify_one` since `take_due` left a permit: nothing is missed.
        let notify = shared.notify.clone();
        drop(shared);
        let notified = notify.notified();
        let full = running.len() >= max;
        // While full, only a finished check makes room.
        let wake = match next {
            Some(at) if !full => {
                if timer.deadline() != at {
                    timer.as_mut().reset(at);
                }
                true
            }
            _ => false,
        };
        tokio::select! {
            Some(()) = running.next(), if !running.is_empty() => {}
            () = &mut timer, if wake => {}
            () = notified, if !full => {}
        }
    }
}

async fn run_job(weak: Weak<Shared>, runner: Runner, job: Job) {
    let started = Instant::now();
    let outcome = runner.run(&job).await;
    let Some(shared) = weak.upgrade() else {
        return;
    };
    let followup = shared.complete(job, outcome, started.elapsed());
    shared.stats.completed.fetch_add(1, Ordering::Relaxed);
    shared.follow(followup);
}

/// Stops checking instances that leave the registry and follows address
/// changes of re-registered ones.
async fn follow_registry(weak: Weak<Shared>, mut events: crate::event::Subscription) {
    loop {
        let event = events.recv().await;
        let Some(shared) = weak.upgrade() else {
            return;
        };
        match event {
            Ok(Event::Deregistered { instance, .. }) => shared.forget(instance.id()),
            Ok(Event::Registered {
                instance,
                replaced: true,
            }) => shared.refresh_instance(&instance),
            Ok(_) => {}
            Err(SubscriptionError::Lagged { .. }) => shared.resync(),
            Err(SubscriptionError::Closed) => return,
        }
    }
}

// === stats ===

/// Upper bounds of the lateness buckets, in microseconds.
const BUCKETS_US: [u64; 16] = [
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    u64::MAX,
];

#[derive(Default)]
struct StatsInner {
    started: AtomicU64,
    completed: AtomicU64,
    max_late_us: AtomicU64,
    buckets: [AtomicU64; 16],
}

impl StatsInner {
    fn record_start(&self, lateness: Duration) {
        let us = u64::try_from(lateness.as_micros()).unwrap_or(u64::MAX);
        self.started.fetch_add(1, Ordering::Relaxed);
        self.max_late_us.fetch_max(us, Ordering::Relaxed);
        let bucket = BUCKETS_US.iter().position(|b| us < *b).unwrap_or(15);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    fn reset(&self) {
        for counter in [&self.started, &self.completed, &self.max_late_us]
            .into_iter()
            .chain(&self.buckets)
        {
            counter.store(0, Ordering::Relaxed);
        }
    }

    fn snapshot(&self, instances: usize) -> CheckerStats {
        CheckerStats {
            instances,
            started: self.started.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
            max_lateness: Duration::from_micros(self.max_late_us.load(Ordering::Relaxed)),
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
        }
    }
}

/// Counters of a [`HealthChecker`]'s scheduler, from [`HealthChecker::stats`].
///
/// Lateness is how long after its due time a check started: the cost of the
/// scheduler and of waiting for a concurrency slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckerStats {
    /// Instances with running checks.
    pub instances: usize,
    /// Check runs started (TTL checks are not runs).
    pub started: u64,
    /// Check runs finished.
    pub completed: u64,
    /// The latest any run started.
    pub max_lateness: Duration,
    buckets: [u64; 16],
}

impl CheckerStats {
    /// An upper bound on the `q` quantile (`0.0..=1.0`) of lateness, at the
    /// resolution of its histogram (100 µs, 250 µs, 500 µs, 1 ms, … 5 s);
    /// never above [`max_lateness`](Self::max_lateness).
    pub fn lateness_quantile(&self, q: f64) -> Duration {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, count) in self.buckets.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let bound = Duration::from_micros(BUCKETS_US[i]);
                return bound.min(self.max_lateness);
            }
        }
        self.max_lateness
    }
}
