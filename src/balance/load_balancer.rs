use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

use super::context::{NoContext, RequestContext};
use super::hash::{AtomicRng, StableHasher, stable_hash};
use super::ip_hash::HashRing;
use super::layer::{LoadBalanceLayer, Unweighted};
use super::least_conn::least;
use super::p2c::{self, EndpointLoad, EwmaConfig};
use super::sticky::{StickyConfig, StickyTable};
use super::strategy::Strategy;
use super::weighted::WeightedCycle;
use crate::instance::{InstanceId, ServiceInstance};

/// The imperative load balancer of the original module: choose one of the
/// instances you pass in.
///
/// It shares its strategies with [`LoadBalanceLayer`] (one round-robin, one
/// weighted cycle, one hash ring, one peak-EWMA estimate); state is kept per
/// instance id, so the set may change between calls. Cheap to clone: clones
/// share their state. Selection takes no lock shared by all callers.
///
/// ```
/// use fluxor_registry::{LoadBalancer, RequestContext, ServiceDefinition, ServiceRegistry, Strategy};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = ServiceRegistry::builder().build().await?;
/// for port in [3001, 3002] {
///     registry.register(ServiceDefinition::new("inventory", "127.0.0.1", port)).await?;
/// }
/// let instances = registry.find_services(&fluxor_registry::Query::name("inventory"));
///
/// let balancer = LoadBalancer::new(Strategy::LeastConnections);
/// let first = balancer.select_instance(&instances, &RequestContext::default()).unwrap();
/// balancer.update_connections(first.id(), 1);
/// let second = balancer.select_instance(&instances, &RequestContext::default()).unwrap();
/// assert_ne!(first.id(), second.id());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct LoadBalancer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    strategy: Strategy,
    sets: DashMap<u64, Arc<SetState>>,
    rng: AtomicRng,
    seed: Option<u64>,
    loads: DashMap<InstanceId, Arc<EndpointLoad>>,
    sticky: Option<Arc<StickyTable>>,
    ewma: EwmaConfig,
    epoch: Instant,
}

/// How many instance sets keep their own state before they are forgotten.
const MAX_SETS: usize = 1024;

/// Strategy state for one set of instances.
#[derive(Debug, Default)]
struct SetState {
    rr: AtomicUsize,
    cycle: OnceLock<WeightedCycle>,
    ring: OnceLock<HashRing>,
}

impl LoadBalancer {
    /// A balancer with `strategy`.
    pub fn new(strategy: Strategy) -> Self {
        Self::build(strategy, None, None)
    }

    fn build(strategy: Strategy, sticky: Option<StickyConfig>, seed: Option<u64>) -> Self {
        Self {
            inner: Arc::new(Inner {
                strategy,
                sets: DashMap::new(),
                rng: seed.map_or_else(AtomicRng::from_entropy, AtomicRng::new),
                seed,
                loads: DashMap::new(),
                sticky: sticky.map(|c| Arc::new(StickyTable::new(c))),
                ewma: EwmaConfig::default(),
                epoch: Instant::now(),
            }),
        }
    }

    /// The same strategy with sticky sessions.
    pub fn with_sticky_sessions(self, config: StickyConfig) -> Self {
        Self::build(self.inner.strategy, Some(config), self.inner.seed)
    }

    /// The same strategy with seeded random choices, for tests.
    pub fn with_seed(self, seed: u64) -> Self {
        let sticky = self.inner.sticky.as_ref().map(|_| StickyConfig::default());
        let mut this = Self::build(self.inner.strategy, sticky, Some(seed));
        if let (Some(mine), Some(inner)) =
            (self.inner.sticky.clone(), Arc::get_mut(&mut this.inner))
        {
            inner.sticky = Some(mine);
        }
        this
    }

    /// The strategy.
    pub fn strategy(&self) -> Strategy {
        self.inner.strategy
    }

    /// The tower face of this balancer: a [`LoadBalanceLayer`] with the same
    /// strategy, seed and sticky-session table.
    pub fn layer(&self) -> LoadBalanceLayer<NoContext, Unweighted> {
        let mut layer =
            LoadBalanceLayer::new(self.inner.strategy).sticky_table(self.inner.sticky.clone());
        if let Some(seed) = self.inner.seed {
            layer = layer.seed(seed);
        }
        layer
    }

    /// The rotation, weighted cycle and hash ring of this set of instances:
    /// each set (one per service, usually) keeps its own, so calls for
    /// different services do not share one rotation, and a cycle or ring
    /// is built once per set, not on every change of set between calls.
    fn set(&self, instances: &[ServiceInstance]) -> Arc<SetState> {
        let fp = fingerprint(instances);
        if let Some(set) = self.inner.sets.get(&fp) {
            return set.clone();
        }
        if self.inner.sets.len() >= MAX_SETS {
            self.inner.sets.clear();
        }
        self.inner.sets.entry(fp).or_default().clone()
    }

    fn load(&self, id: &InstanceId) -> Arc<EndpointLoad> {
        if let Some(load) = self.inner.loads.get(id) {
            return load.clone();
        }
        self.inner
            .loads
            .entry(id.clone())
            .or_insert_with(|| Arc::new(EndpointLoad::new(&self.inner.ewma)))
            .clone()
    }

    /// Chooses one of `instances` for a request with `ctx`; `None` when the
    /// slice is empty. The caller passes the instances it considers (e.g.
    /// healthy ones); their order should be stable (the registry returns
    /// them ordered by id).
    pub fn select_instance(
        &self,
        instances: &[ServiceInstance],
        ctx: &RequestContext,
    ) -> Option<ServiceInstance> {
        let n = instances.len();
        if n == 0 {
            return None;
        }
        let keys = ctx.keys();
        let inner = &self.inner;
        if let (Some(table), Some(session)) = (&inner.sticky, keys.session_hash())
            && let Some(bound) = table.get(session)
            && let Some(i) = instances.iter().find(|i| stable_hash(i.id()) == bound)
        {
            return Some(i.clone());
        }
        let pos = match inner.strategy {
            Strategy::RoundRobin => self.set(instances).rr.fetch_add(1, Ordering::Relaxed) % n,
            Strategy::LeastConnections => {
                let counts = instances.iter().map(|i| self.connections(i.id()));
                let start = self.set(instances).rr.fetch_add(1, Ordering::Relaxed);
                least(counts, start).unwrap_or(0)
            }
            Strategy::Weighted => {
                let set = self.set(instances);
                let cycle = set.cycle.get_or_init(|| {
                    let weights: Vec<u32> = instances.iter().map(ServiceInstance::weight).collect();
                    WeightedCycle::new(&weights)
                });
                cycle
                    .pick(set.rr.fetch_add(1, Ordering::Relaxed))
                    .unwrap_or(0)
                    % n
            }
            Strategy::Random => inner.rng.below(n),
            Strategy::IpHash => match keys.hash() {
                Some(h) => {
                    let set = self.set(instances);
                    let ring = set.ring.get_or_init(|| {
                        let nodes: Vec<(u64, u32)> = instances
                            .iter()
                            .map(|i| (stable_hash(i.id()), i.weight()))
                            .collect();
                        HashRing::new(&nodes)
                    });
                    ring.lookup(h).unwrap_or(0) % n
                }
                None => inner.rng.below(n),
            },
            Strategy::P2cPeakEwma => {
                let a = inner.rng.below(n);
                let b = if n > 1 {
                    (a + 1 + inner.rng.below(n - 1)) % n
                } else {
                    a
                };
                let now = p2c::nanos_since(inner.epoch);
                let cost = |i: usize| {
                    self.load(instances[i].id())
                        .cost(instances[i].weight(), now, &inner.ewma)
                };
                p2c::choose((a, cost(a)), (b, cost(b)))
            }
        };
        let chosen = instances[pos].clone();
        if let (Some(table), Some(session)) = (&inner.sticky, keys.session_hash()) {
            table.bind(session, stable_hash(chosen.id()));
        }
        self.prune(n);
        Some(chosen)
    }

    /// Adds `delta` to the requests in flight on `id` (least-connections,
    /// p2c): +1 when a request starts, -1 when it ends. Never below 0.
    pub fn update_connections(&self, id: &InstanceId, delta: i64) {
        self.load(id).add(delta);
    }

    /// The requests in flight on `id`, as counted by `update_connections`.
    pub fn connections(&self, id: &InstanceId) -> u64 {
        self.inner.loads.get(id).map_or(0, |l| l.in_flight())
    }

    /// Feeds a response time of `id` to the p2c latency estimate.
    pub fn record_response_time(&self, id: &InstanceId, rtt: Duration) {
        let now = p2c::nanos_since(self.inner.epoch);
        self.load(id).observe(rtt, now, &self.inner.ewma);
    }

    /// Forgets the instance bound to `session_id`; true if there was one.
    pub fn clear_sticky_session(&self, session_id: &str) -> bool {
        self.inner
            .sticky
            .as_ref()
            .is_some_and(|t| t.clear(stable_hash(session_id)))
    }

    /// Keeps the per-instance state from growing without bound as
    /// instances come and go: idle entries go when it is well past the set.
    fn prune(&self, n: usize) {
        let loads = &self.inner.loads;
        if loads.len() > 4 * n + 1024 {
            loads.retain(|_, l| l.in_flight() > 0 || Arc::strong_count(l) > 1);
        }
    }
}

/// Identifies a set of instances and weights, to reuse what was built for it.
fn fingerprint(instances: &[ServiceInstance]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = StableHasher::default();
    for i in instances {
        i.id().hash(&mut h);
        i.weight().hash(&mut h);
    }
    h.finish()
}
