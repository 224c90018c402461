use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};

use tokio::time::{Instant, Sleep};
use tower::discover::{Change, Discover};
use tower::{BoxError, Service};

use super::context::{ExtractContext, RequestKeys};
use super::dirty::{DirtySet, MAX_SLOTS};
use super::error::{NoEndpoints, NotReady};
use super::future::{LoadGuard, ResponseFuture};
use super::hash::{AtomicRng, stable_hash};
use super::ip_hash::HashRing;
use super::layer::{LoadBalanceLayer, Weigh};
use super::least_conn::Buckets;
use super::p2c::{self, EndpointLoad};
use super::strategy::Strategy;
use super::weighted::WeightedCycle;

/// How far ip-hash walks the ring past a busy owner before scanning.
const RING_WALK: usize = 64;

/// A balanced `Service` over the endpoints of a `Discover` stream; from
/// [`LoadBalanceLayer`].
///
/// `poll_ready` applies discovery changes, re-polls only the endpoints whose
/// readiness may have changed (the one last called, and those whose wakers
/// fired), and is ready when at least one endpoint is. With none ready it is
/// `Pending`, woken by any endpoint or discovery change (or fails with
/// [`NoEndpoints`] after the configured wait). `call` picks a ready endpoint
/// with the strategy. An endpoint whose `poll_ready` fails rests and is
/// polled again later; it is only ever dropped by discovery.
pub struct LoadBalance<D, E, W>
where
    D: Discover,
{
    discover: D,
    discover_done: bool,
    config: LoadBalanceLayer<E, W>,
    slots: Vec<Option<Slot<D::Service>>>,
    free: Vec<usize>,
    by_key: HashMap<D::Key, usize>,
    by_id: HashMap<u64, usize>,
    live: Vec<usize>,
    rebuild: bool,
    weighted: WeightedCycle,
    ring: HashRing,
    least: Buckets,
    ready: usize,
    to_poll: Vec<usize>,
    failed: Vec<usize>,
    retry: Option<Pin<Box<Sleep>>>,
    waiting: Option<Pin<Box<Sleep>>>,
    dirty: DirtySet,
    rr: usize,
    wrr: usize,
    rng: AtomicRng,
    epoch: Instant,
    /// The clock as read once per p2c call.
    clock: Instant,
}

struct Slot<S> {
    id: u64,
    svc: S,
    state: State,
    load: Arc<EndpointLoad>,
    waker: Waker,
    weight: u32,
    live_pos: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Ready,
    NotReady,
    Failed,
}

impl<D, E, W> fmt::Debug for LoadBalance<D, E, W>
where
    D: Discover,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadBalance")
            .field("strategy", &self.config.strategy)
            .field("endpoints", &self.live.len())
            .field("ready", &self.ready)
            .finish()
    }
}

impl<D, E, W> LoadBalance<D, E, W>
where
    D: Discover,
{
    pub(crate) fn new(discover: D, config: LoadBalanceLayer<E, W>) -> Self {
        let rng = config
            .seed
            .map_or_else(AtomicRng::from_entropy, AtomicRng::new);
        Self {
            discover,
            discover_done: false,
            config,
            slots: Vec::new(),
            free: Vec::new(),
            by_key: HashMap::new(),
            by_id: HashMap::new(),
            live: Vec::new(),
            rebuild: false,
            weighted: WeightedCycle::default(),
            ring: HashRing::default(),
            least: Buckets::default(),
            ready: 0,
            to_poll: Vec::new(),
            failed: Vec::new(),
            retry: None,
            waiting: None,
            dirty: DirtySet::default(),
            rr: 0,
            wrr: 0,
            rng,
            epoch: Instant::now(),
            clock: Instant::now(),
        }
    }

    /// How many endpoints it knows of.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether it knows of none.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// How many endpoints were ready at the last `poll_ready`.
    pub fn ready_len(&self) -> usize {
        self.ready
    }

    fn strategy(&self) -> Strategy {
        self.config.strategy
    }

    fn set_state(&mut self, i: usize, state: State) {
        let least = self.strategy() == Strategy::LeastConnections;
        let Some(Some(slot)) = self.slots.get_mut(i) else {
            return;
        };
        match (slot.state, state) {
            (State::Ready, State::Ready) => {}
            (State::Ready, _) => {
                self.ready -= 1;
                if least {
                    slot.load.ready.store(false, Ordering::SeqCst);
                    self.least.remove(i);
                }
            }
            (_, State::Ready) => {
                self.ready += 1;
                if least {
                    // Flag first, count second: a request ending meanwhile
                    // either is counted here or sees the flag and marks.
                    slot.load.ready.store(true, Ordering::SeqCst);
                    self.least.insert(i, slot.load.in_flight_ordered() as usize);
                }
            }
            _ => {}
        }
        slot.state = state;
    }
}

impl<D, E, W> LoadBalance<D, E, W>
where
    D: Discover + Unpin,
    D::Key: Hash + Eq + Clone,
    D::Error: Into<BoxError>,
    W: Weigh<D::Key>,
{
    fn insert(&mut self, key: D::Key, svc: D::Service) {
        self.rebuild = true;
        let weight = self.config.weights.weigh(&key).max(1);
        if let Some(&i) = self.by_key.get(&key) {
            self.set_state(i, State::NotReady);
            if let Some(Some(slot)) = self.slots.get_mut(i) {
                slot.svc = svc;
                slot.weight = weight;
            }
            self.to_poll.push(i);
            return;
        }
        let i = match self.free.pop() {
            Some(i) => i,
            None if self.slots.len() < MAX_SLOTS => {
                self.slots.push(None);
                self.slots.len() - 1
            }
            None => {
                tracing::error!(target: "fluxor_registry::balance", "more than {MAX_SLOTS} endpoints; ignoring one");
                return;
            }
        };
        let id = stable_hash(&key);
        self.by_key.insert(key, i);
        self.by_id.insert(id, i);
        self.slots[i] = Some(Slot {
            id,
            svc,
            state: State::NotReady,
            load: Arc::new(EndpointLoad::marked(
                &self.config.ewma,
                self.dirty.marker(i),
            )),
            waker: self.dirty.waker(i),
            weight,
            live_pos: 0,
        });
        self.to_poll.push(i);
    }

    fn remove(&mut self, key: &D::Key) {
        let Some(i) = self.by_key.remove(key) else {
            return;
        };
        self.set_state(i, State::NotReady);
        if let Some(slot) = self.slots[i].take() {
            self.by_id.remove(&slot.id);
        }
        self.free.push(i);
        self.rebuild = true;
    }

    fn update_from_discover(&mut self, cx: &mut Context<'_>) -> Result<(), BoxError> {
        while !self.discover_done {
            match Pin::new(&mut self.discover).poll_discover(cx) {
                Poll::Pending => break,
                Poll::Ready(None) => self.discover_done = true,
                Poll::Ready(Some(Err(e))) => return Err(e.into()),
                Poll::Ready(Some(Ok(Change::Insert(key, svc)))) => self.insert(key, svc),
                Poll::Ready(Some(Ok(Change::Remove(key)))) => self.remove(&key),
            }
        }
        if self.rebuild {
            self.rebuild_strategy();
        }
        Ok(())
    }

    /// Recomputes what depends on the set of endpoints; the rotation,
    /// counts, estimates and sticky table carry over.
    fn rebuild_strategy(&mut self) {
        self.rebuild = false;
        self.live.clear();
        let mut nodes = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if let Some(slot) = slot {
                slot.live_pos = self.live.len();
                self.live.push(i);
                nodes.push((slot.id, slot.weight));
            }
        }
        match self.strategy() {
            Strategy::Weighted => {
                let weights: Vec<u32> = nodes.iter().map(|&(_, w)| w).collect();
                self.weighted = WeightedCycle::new(&weights);
            }
            Strategy::IpHash => self.ring = HashRing::new(&nodes),
            _ => {}
        }
    }

    fn drain_dirty(&mut self) {
        let least = self.strategy() == Strategy::LeastConnections;
        let (slots, to_poll, buckets) = (&self.slots, &mut self.to_poll, &mut self.least);
        self.dirty.drain(|i| {
            if let Some(Some(slot)) = slots.get(i) {
                match slot.state {
                    State::NotReady => to_poll.push(i),
                    State::Ready if least => buckets.insert(i, slot.load.in_flight() as usize),
                    _ => {}
                }
            }
        });
    }

    fn poll_endpoints<Req>(&mut self, cx: &mut Context<'_>)
    where
        D::Service: Service<Req>,
        <D::Service as Service<Req>>::Error: Into<BoxError>,
    {
        if let Some(retry) = self.retry.as_mut()
            && retry.as_mut().poll(cx).is_ready()
        {
            self.retry = None;
            for i in std::mem::take(&mut self.failed) {
                if let Some(Some(slot)) = self.slots.get_mut(i)
                    && slot.state == State::Failed
                {
                    slot.state = State::NotReady;
                    self.to_poll.push(i);
                }
            }
        }
        while let Some(i) = self.to_poll.pop() {
            let Some(Some(slot)) = self.slots.get_mut(i) else {
                continue;
            };
            if slot.state != State::NotReady {
                continue;
            }
            let mut ecx = Context::from_waker(&slot.waker);
            match Service::<Req>::poll_ready(&mut slot.svc, &mut ecx) {
                Poll::Ready(Ok(())) => self.set_state(i, State::Ready),
                Poll::Pending => {}
                Poll::Ready(Err(e)) => {
                    let e: BoxError = e.into();
                    tracing::warn!(
                        target: "fluxor_registry::balance",
                        endpoint = slot.id, error = %e,
                        "endpoint failed to become ready; retrying it later"
                    );
                    slot.state = State::Failed;
                    self.failed.push(i);
                    if self.retry.is_none() {
                        let mut sleep = Box::pin(tokio::time::sleep(self.config.endpoint_retry));
                        let _ = sleep.as_mut().poll(cx);
                        self.retry = Some(sleep);
                    }
                }
            }
        }
    }

    fn acceptable(&self, i: usize, tried: Option<&super::TriedEndpoints>) -> bool {
        match self.slots.get(i) {
            Some(Some(slot)) => {
                slot.state == State::Ready && !tried.is_some_and(|t| t.contains(slot.id))
            }
            _ => false,
        }
    }

    fn random_live(&self) -> usize {
        self.live[self.rng.below(self.live.len())]
    }

    /// The strategy's choice; it may be busy or already tried.
    fn candidate(&mut self, keys: &RequestKeys) -> Option<usize> {
        let n = self.live.len();
        if n == 0 {
            return None;
        }
        let tried = keys.tried_list();
        match self.strategy() {
            // The rotation moves past busy endpoints, so their turns are
            // shared evenly by the others (not all given to the next one).
            Strategy::RoundRobin => {
                let mut first = None;
                for _ in 0..n {
                    let i = self.live[self.rr % n];
                    self.rr = self.rr.wrapping_add(1);
                    first.get_or_insert(i);
                    if self.acceptable(i, tried) {
                        return Some(i);
                    }
                }
                first
            }
            Strategy::Weighted => {
                let mut first = None;
                for _ in 0..n {
                    let i = self.live.get(self.weighted.pick(self.wrr)?).copied()?;
                    self.wrr = self.wrr.wrapping_add(1);
                    first.get_or_insert(i);
                    if self.acceptable(i, tried) {
                        return Some(i);
                    }
                }
                first
            }
            Strategy::Random => Some(self.random_live()),
            Strategy::LeastConnections => self.least.pick(),
            Strategy::IpHash => match keys.hash() {
                Some(h) => {
                    let first = self.ring.lookup(h).map(|p| self.live[p]);
                    self.ring
                        .walk(h)
                        .take(RING_WALK)
                        .map(|p| self.live[p])
                        .find(|&i| self.acceptable(i, tried))
                        .or(first)
                }
                None => Some(self.random_live()),
            },
            Strategy::P2cPeakEwma => {
                let a = self.rng.below(n);
                let b = if n > 1 {
                    (a + 1 + self.rng.below(n - 1)) % n
                } else {
                    a
                };
                let (a, b) = (self.live[a], self.live[b]);
                let now =
                    u64::try_from(self.clock.saturating_duration_since(self.epoch).as_nanos())
                        .unwrap_or(u64::MAX);
                let cost = |i: usize| match &self.slots[i] {
                    Some(s) if self.acceptable(i, tried) => {
                        s.load.cost(s.weight, now, &self.config.ewma)
                    }
                    _ => f64::INFINITY,
                };
                Some(p2c::choose((a, cost(a)), (b, cost(b))))
            }
        }
    }

    /// A ready endpoint for a request with `keys`, and whether it came from
    /// the sticky-session table.
    fn pick(&mut self, keys: &RequestKeys) -> Option<(usize, bool)> {
        if self.ready == 0 {
            return None;
        }
        let tried = keys.tried_list();
        if let (Some(table), Some(session)) = (&self.config.sticky, keys.session_hash())
            && let Some(&i) = table.get(session).and_then(|id| self.by_id.get(&id))
            && self.acceptable(i, tried)
        {
            return Some((i, true));
        }
        let candidate = self.candidate(keys);
        if let Some(i) = candidate.filter(|&i| self.acceptable(i, tried)) {
            return Some((i, false));
        }
        // Busy or tried: the next acceptable endpoint after it, then any
        // ready one (every ready endpoint was already tried).
        let n = self.live.len();
        let start = candidate
            .and_then(|i| self.slots[i].as_ref().map(|s| s.live_pos))
            .unwrap_or(0);
        let scan = (1..=n).map(|k| self.live[(start + k) % n]);
        scan.clone()
            .find(|&i| self.acceptable(i, tried))
            .or_else(|| scan.clone().find(|&i| self.acceptable(i, None)))
            .map(|i| (i, false))
    }
}

impl<D, E, W, Req> Service<Req> for LoadBalance<D, E, W>
where
    D: Discover + Unpin,
    D::Key: Hash + Eq + Clone,
    D::Error: Into<BoxError>,
    D::Service: Service<Req>,
    <D::Service as Service<Req>>::Error: Into<BoxError>,
    E: ExtractContext<Req>,
    W: Weigh<D::Key>,
{
    type Response = <D::Service as Service<Req>>::Response;
    type Error = BoxError;
    type Future = ResponseFuture<<D::Service as Service<Req>>::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.dirty.shared().task.register(cx.waker());
        self.update_from_discover(cx)?;
        self.drain_dirty();
        self.poll_endpoints::<Req>(cx);
        if self.ready > 0 {
            self.waiting = None;
            return Poll::Ready(Ok(()));
        }
        if let Some(wait) = self.config.no_endpoints_timeout {
            let sleep = self
                .waiting
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(wait)));
            if sleep.as_mut().poll(cx).is_ready() {
                self.waiting = None;
                return Poll::Ready(Err(NoEndpoints {
                    known: self.live.len(),
                    waited: wait,
                }
                .into()));
            }
        }
        Poll::Pending
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let keys = self.config.extractor.extract(&req);
        let p2c = self.strategy() == Strategy::P2cPeakEwma;
        if p2c {
            self.clock = Instant::now();
        }
        let Some((i, from_table)) = self.pick(&keys) else {
            return ResponseFuture::failed(NotReady.into());
        };
        // Its readiness is spent: poll it again before the next call.
        self.set_state(i, State::NotReady);
        self.to_poll.push(i);
        let strategy = self.strategy();
        let epoch = self.epoch;
        let ewma = self.config.ewma;
        let Some(Some(slot)) = self.slots.get_mut(i) else {
            return ResponseFuture::failed(NotReady.into());
        };
        if let (Some(table), Some(session), false) =
            (&self.config.sticky, keys.session_hash(), from_table)
        {
            table.bind(session, slot.id);
        }
        if let Some(tried) = keys.tried_list() {
            tried.push(slot.id);
        }
        slot.load.start();
        let guard = LoadGuard {
            load: slot.load.clone(),
            mark: strategy == Strategy::LeastConnections,
            started: p2c.then_some((epoch, self.clock, ewma)),
            done: false,
        };
        ResponseFuture::new(slot.svc.call(req), guard)
    }
}
