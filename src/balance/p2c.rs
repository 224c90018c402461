//! Power of two choices with peak-EWMA load (Mitzenmacher's "power of two
//! choices"; the peak-EWMA latency estimate of Finagle, as in tower's
//! `load::PeakEwma`), weight-aware.
//!
//! Each endpoint keeps an exponentially weighted moving average of its
//! response times that jumps up at once to a slower response (the *peak*)
//! and decays towards faster ones with a time constant. Its load is
//! `estimate × (in flight + 1) ÷ weight`; the balancer picks two endpoints at
//! random and sends to the less loaded one. Dividing by the weight is what
//! tower's p2c lacks (tower-rs/tower#696).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Tuning for the peak-EWMA estimate.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EwmaConfig {
    /// The estimate an endpoint starts with, before any response.
    pub(crate) default_rtt: Duration,
    /// How fast the estimate forgets: the time constant of its decay.
    pub(crate) decay: Duration,
}

impl Default for EwmaConfig {
    fn default() -> Self {
        Self {
            default_rtt: Duration::from_millis(30),
            decay: Duration::from_secs(10),
        }
    }
}

/// One endpoint's load: requests in flight and the latency estimate.
/// Shared with response futures, which update it as they finish.
#[derive(Debug)]
pub(crate) struct EndpointLoad {
    in_flight: AtomicU64,
    /// The estimate in nanoseconds, as `f64` bits.
    rtt_ns: AtomicU64,
    /// When the estimate was last updated, in ns after `epoch`.
    updated_ns: AtomicU64,
    /// Tells the tower balancer this endpoint's count changed
    /// (least-connections); `None` for the imperative face.
    pub(crate) marker: Option<super::dirty::Marker>,
    /// Whether the balancer holds this endpoint as ready (least-connections
    /// buckets): only then does a finished request need to mark it.
    pub(crate) ready: std::sync::atomic::AtomicBool,
}

impl EndpointLoad {
    pub(crate) fn new(config: &EwmaConfig) -> Self {
        Self {
            in_flight: AtomicU64::new(0),
            rtt_ns: AtomicU64::new((config.default_rtt.as_nanos() as f64).to_bits()),
            updated_ns: AtomicU64::new(0),
            marker: None,
            ready: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A load whose changes mark its slot in the balancer's dirty set.
    pub(crate) fn marked(config: &EwmaConfig, marker: super::dirty::Marker) -> Self {
        Self {
            marker: Some(marker),
            ..Self::new(config)
        }
    }

    pub(crate) fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn start(&self) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
    }

    /// A request counted by [`start`](Self::start) ended.
    pub(crate) fn end(&self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    /// The count, ordered with `ready` (see `LoadGuard`).
    pub(crate) fn in_flight_ordered(&self) -> u64 {
        self.in_flight.load(Ordering::SeqCst)
    }

    pub(crate) fn add(&self, delta: i64) {
        if delta >= 0 {
            self.in_flight
                .fetch_add(delta.unsigned_abs(), Ordering::Relaxed);
        } else {
            let _ = self
                .in_flight
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    Some(n.saturating_sub(delta.unsigned_abs()))
                });
        }
    }

    pub(crate) fn observe(&self, rtt: Duration, now_ns: u64, config: &EwmaConfig) {
        let sample = rtt.as_nanos() as f64;
        let est = f64::from_bits(self.rtt_ns.load(Ordering::Relaxed));
        let elapsed = now_ns.saturating_sub(self.updated_ns.load(Ordering::Relaxed));
        let decay = decay(elapsed, config);
        let current = est * decay;
        let next = if sample > current {
            sample // the peak: a slow response counts at once
        } else {
            current * decay + sample * (1.0 - decay)
        };
        self.rtt_ns.store(next.to_bits(), Ordering::Relaxed);
        self.updated_ns.store(now_ns, Ordering::Relaxed);
    }

    fn decayed(&self, now_ns: u64, config: &EwmaConfig) -> f64 {
        let est = f64::from_bits(self.rtt_ns.load(Ordering::Relaxed));
        let elapsed = now_ns.saturating_sub(self.updated_ns.load(Ordering::Relaxed));
        est * decay(elapsed, config)
    }

    /// `estimate × (in flight + 1) ÷ weight`.
    pub(crate) fn cost(&self, weight: u32, now_ns: u64, config: &EwmaConfig) -> f64 {
        let est = self.decayed(now_ns, config).max(1.0);
        est * (self.in_flight() + 1) as f64 / f64::from(weight.max(1))
    }
}

/// `e^(-elapsed / τ)`: how much of the estimate is left after `elapsed`.
fn decay(elapsed_ns: u64, config: &EwmaConfig) -> f64 {
    if elapsed_ns == 0 {
        return 1.0;
    }
    exp_neg(elapsed_ns as f64 / config.decay.as_nanos().max(1) as f64)
}

/// `e^-x` for `x ≥ 0`, to about 1e-5 relative: a [2/2] Padé approximant on `x / 2^k`
/// (below 1/8), squared back `k` times. Several times cheaper than
/// `f64::exp`, and the balancer computes it on every pick.
pub(crate) fn exp_neg(x: f64) -> f64 {
    if x.is_nan() || x <= 0.0 {
        return 1.0;
    }
    if x > 40.0 {
        return 0.0;
    }
    let mut k = 0;
    let mut y = x;
    while y > 0.125 {
        y *= 0.5;
        k += 1;
    }
    let y2 = y * y / 12.0;
    let mut r = (1.0 - y / 2.0 + y2) / (1.0 + y / 2.0 + y2);
    for _ in 0..k {
        r *= r;
    }
    r
}

/// Nanoseconds since `epoch` on tokio's clock.
pub(crate) fn nanos_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Of two candidates, the one with the lower cost.
pub(crate) fn choose(a: (usize, f64), b: (usize, f64)) -> usize {
    if b.1 < a.1 { b.0 } else { a.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_neg_is_close_to_exp() {
        for i in 0..4_000 {
            let x = f64::from(i) / 100.0;
            let (want, got) = ((-x).exp(), exp_neg(x));
            assert!(
                (want - got).abs() <= 1e-5 * want + 1e-15,
                "x={x}: {got} vs {want}"
            );
        }
        assert_eq!(exp_neg(0.0), 1.0);
        assert_eq!(exp_neg(100.0), 0.0);
        assert_eq!(exp_neg(f64::NAN), 1.0);
    }

    #[test]
    fn peak_then_decay() {
        let c = EwmaConfig {
            default_rtt: Duration::from_millis(10),
            decay: Duration::from_secs(1),
        };
        let load = EndpointLoad::new(&c);
        let ms = 1_000_000.0;
        assert!((load.cost(1, 0, &c) - 10.0 * ms).abs() < 1.0);
        load.observe(Duration::from_millis(100), 0, &c);
        assert!(
            (load.cost(1, 0, &c) - 100.0 * ms).abs() < 1.0,
            "peaks at once"
        );
        load.observe(Duration::from_millis(1), 1_000_000_000, &c);
        let after = load.cost(1, 1_000_000_000, &c) / ms;
        assert!(
            after < 40.0 && after > 1.0,
            "decays towards fast responses: {after}"
        );
        load.start();
        load.start();
        let busy = load.cost(2, 1_000_000_000, &c) / ms;
        assert!(
            (busy - after * 3.0 / 2.0).abs() < 1e-6,
            "× (in flight + 1) ÷ weight"
        );
        load.end();
        assert_eq!(load.in_flight(), 1);
    }
}
