use std::sync::Arc;
use std::time::Duration;

use tower::Layer;

use super::context::NoContext;
use super::p2c::EwmaConfig;
use super::service::LoadBalance;
use super::sticky::{StickyConfig, StickyTable};
use super::strategy::Strategy;
use crate::instance::InstanceId;
use crate::registry::ServiceRegistry;

/// Where a balancer gets endpoint weights from, by endpoint key.
///
/// Implemented by [`Unweighted`] (every weight 1), by [`ServiceRegistry`]
/// for `InstanceId` keys (the instance's registered weight), and by every
/// `Fn(&K) -> u32`.
pub trait Weigh<K> {
    /// The weight of the endpoint `key` (0 counts as 1).
    fn weigh(&self, key: &K) -> u32;
}

/// Every endpoint weighs 1.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unweighted;

impl<K> Weigh<K> for Unweighted {
    fn weigh(&self, _: &K) -> u32 {
        1
    }
}

impl<K, F: Fn(&K) -> u32> Weigh<K> for F {
    fn weigh(&self, key: &K) -> u32 {
        self(key)
    }
}

impl Weigh<InstanceId> for ServiceRegistry {
    fn weigh(&self, key: &InstanceId) -> u32 {
        self.get_service(key).map_or(1, |i| i.weight())
    }
}

/// Turns a `Discover` of endpoints into one balanced `Service`; see
/// [`balance`](crate::balance).
#[derive(Clone, Debug)]
pub struct LoadBalanceLayer<E = NoContext, W = Unweighted> {
    pub(crate) strategy: Strategy,
    pub(crate) sticky: Option<Arc<StickyTable>>,
    pub(crate) ewma: EwmaConfig,
    pub(crate) no_endpoints_timeout: Option<Duration>,
    pub(crate) endpoint_retry: Duration,
    pub(crate) seed: Option<u64>,
    pub(crate) extractor: E,
    pub(crate) weights: W,
}

impl LoadBalanceLayer {
    /// A balancer with `strategy`, no request context, every weight 1.
    pub fn new(strategy: Strategy) -> Self {
        Self {
            strategy,
            sticky: None,
            ewma: EwmaConfig::default(),
            no_endpoints_timeout: None,
            endpoint_retry: Duration::from_secs(1),
            seed: None,
            extractor: NoContext,
            weights: Unweighted,
        }
    }
}

impl<E, W> LoadBalanceLayer<E, W> {
    /// The strategy.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// How requests give their client address, session and hash key
    /// (e.g. [`HttpContext`](super::HttpContext)).
    pub fn context<E2>(self, extractor: E2) -> LoadBalanceLayer<E2, W> {
        LoadBalanceLayer {
            strategy: self.strategy,
            sticky: self.sticky,
            ewma: self.ewma,
            no_endpoints_timeout: self.no_endpoints_timeout,
            endpoint_retry: self.endpoint_retry,
            seed: self.seed,
            extractor,
            weights: self.weights,
        }
    }

    /// Where endpoint weights come from (e.g. the registry).
    pub fn weights<W2>(self, weights: W2) -> LoadBalanceLayer<E, W2> {
        LoadBalanceLayer {
            strategy: self.strategy,
            sticky: self.sticky,
            ewma: self.ewma,
            no_endpoints_timeout: self.no_endpoints_timeout,
            endpoint_retry: self.endpoint_retry,
            seed: self.seed,
            extractor: self.extractor,
            weights,
        }
    }

    /// Sticky sessions on top of the strategy. Every balancer built from
    /// this layer shares one session table.
    pub fn sticky(mut self, config: StickyConfig) -> Self {
        self.sticky = Some(Arc::new(StickyTable::new(config)));
        self
    }

    pub(crate) fn sticky_table(mut self, table: Option<Arc<StickyTable>>) -> Self {
        self.sticky = table;
        self
    }

    /// Fail `poll_ready` with [`NoEndpoints`](super::NoEndpoints) after
    /// waiting this long with no ready endpoint (by default it waits).
    pub fn no_endpoints_timeout(mut self, wait: Duration) -> Self {
        self.no_endpoints_timeout = Some(wait);
        self
    }

    /// How long an endpoint whose `poll_ready` failed rests before it is
    /// polled again (default 1 s). Endpoints are never dropped for an error.
    pub fn endpoint_retry(mut self, wait: Duration) -> Self {
        self.endpoint_retry = wait;
        self
    }

    /// Seeds the random choices (random, p2c), for reproducible tests.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// p2c: the latency estimate of an endpoint with no responses yet
    /// (default 30 ms).
    pub fn default_rtt(mut self, rtt: Duration) -> Self {
        self.ewma.default_rtt = rtt;
        self
    }

    /// p2c: the time constant of the latency estimate's decay (default 10 s).
    pub fn decay(mut self, decay: Duration) -> Self {
        self.ewma.decay = decay.max(Duration::from_millis(1));
        self
    }
}

impl<D: tower::discover::Discover, E: Clone, W: Clone> Layer<D> for LoadBalanceLayer<E, W> {
    type Service = LoadBalance<D, E, W>;

    fn layer(&self, discover: D) -> Self::Service {
        LoadBalance::new(discover, self.clone())
    }
}
