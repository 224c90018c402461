//! The circuit state machine: pure, no clock, no I/O.
//!
//! It is told the time (lazily, as a closure, so that the closed-state fast
//! path never reads the clock) and the outcome of each call, and answers
//! with decisions: admit or reject, and which transition happened. The gate
//! around it ([`Circuit`](super::breaker::Circuit)) publishes the
//! transitions, wakes waiters and keeps the ejection count.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::classify::Outcome;
use super::config::{CircuitBreakerConfig, SlidingWindow};

/// The state of a circuit, as [`CircuitBreaker::get_state`] reports it.
///
/// [`CircuitBreaker::get_state`]: super::CircuitBreaker::get_state
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CircuitState {
    /// Calls flow; outcomes are counted.
    Closed,
    /// Calls are rejected until the reset timeout passes (or, when opened
    /// by hand, until it is reset).
    Open,
    /// A limited number of trial calls decide whether to close or reopen.
    HalfOpen,
}

impl CircuitState {
    /// `"closed"`, `"open"` or `"half-open"`.
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half-open",
        }
    }
}

impl std::fmt::Display for CircuitState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { admitted: u32, successes: u32 },
    /// Opened by hand; only a reset closes it.
    Forced,
}

/// The right to make one call, handed out by [`Machine::acquire`] and given
/// back with its outcome to [`Machine::record`] or unused to
/// [`Machine::release`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket {
    generation: u64,
    trial: bool,
}

impl Ticket {
    /// Whether this is one of the half-open trial calls.
    pub(crate) fn is_trial(self) -> bool {
        self.trial
    }
}

/// [`Machine::acquire`]'s answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    Admitted(Ticket),
    /// `retry_after` is `None` when forced open or when every trial call is
    /// taken.
    Rejected { retry_after: Option<Duration> },
}

/// A change of state, to be published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    /// `retry_after` is `None` when opened by hand.
    Opened { retry_after: Option<Duration> },
    HalfOpened,
    Closed,
}

/// One circuit's state.
#[derive(Debug)]
pub(crate) struct Machine {
    config: Arc<CircuitBreakerConfig>,
    phase: Phase,
    /// Bumped on every transition; tickets of an earlier generation are
    /// ignored when they come back.
    generation: u64,
    /// Trips in a row without closing, for the backoff.
    trips: u32,
    consecutive_failures: u32,
    window: Option<Window>,
}

impl Machine {
    pub(crate) fn new(config: Arc<CircuitBreakerConfig>) -> Self {
        let window = config.rate.as_ref().map(|r| Window::new(r.window));
        Self {
            config,
            phase: Phase::Closed,
            generation: 0,
            trips: 0,
            consecutive_failures: 0,
            window,
        }
    }

    /// The state at `now`: an open circuit whose wait is over reports
    /// half-open, since its next call is a trial.
    pub(crate) fn state(&self, now: Instant) -> CircuitState {
        match self.phase {
            Phase::Closed => CircuitState::Closed,
            Phase::Open { until } if now >= until => CircuitState::HalfOpen,
            Phase::Open { .. } | Phase::Forced => CircuitState::Open,
            Phase::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// When an open circuit turns half-open, if it is open on a timer.
    pub(crate) fn reopens_at(&self) -> Option<Instant> {
        match self.phase {
            Phase::Open { until } => Some(until),
            _ => None,
        }
    }

    /// Whether recording a success needs the time (a time window does).
    fn success_needs_clock(&self) -> bool {
        matches!(
            self.window,
            Some(Window::Time(_))
        )
    }

    /// Asks to make one call. `now` is only called when the circuit is not
    /// closed.
    pub(crate) fn acquire(
        &mut self,
        now: impl FnOnce() -> Instant,
    ) -> (Admission, Option<Transition>) {
        let mut transition = None;
        match self.phase {
            Phase::Closed => {
                return (Admission::Admitted(self.ticket(false)), None);
            }
            Phase::Forced => return (Admission::Rejected { retry_after: None }, None),
            Phase::Open { until } => {
                let now = now();
                if now < until {
                    let retry_after = Some(until - now);
                    return (Admission::Rejected { retry_after }, None);
                }
                self.enter(Phase::HalfOpen {
                    admitted: 0,
                    successes: 0,
                });
                transition = Some(Transition::HalfOpened);
            }
            Phase::HalfOpen { .. } => {}
        }
        let generation = self.generation;
        let max = self.config.half_open_max_calls;
        match &mut self.phase {
            Phase::HalfOpen { admitted, .. } if *admitted < max => {
                *admitted += 1;
                let ticket = Ticket {
                    generation,
                    trial: true,
                };
                (Admission::Admitted(ticket), transition)
            }
            _ => (Admission::Rejected { retry_after: None }, transition),
        }
    }

    /// Gives back a ticket whose call never finished (its future was
    /// dropped): a trial permit is freed, nothing is counted. Returns whether
    /// a permit was freed.
    pub(crate) fn release(&mut self, ticket: Ticket) -> bool {
        if ticket.generation != self.generation || !ticket.trial {
            return false;
        }
        match &mut self.phase {
            Phase::HalfOpen { admitted, .. } if *admitted > 0 => {
                *admitted -= 1;
                true
            }
            _ => false,
        }
    }

    /// Records the outcome of an admitted call. `may_eject` is asked before a
    /// closed circuit opens (the ejection budget); when it says no, the
    /// circuit stays closed and asks again on the next failure.
    pub(crate) fn record(
        &mut self,
        ticket: Ticket,
        outcome: Outcome,
        slow: bool,
        now: impl FnOnce() -> Instant,
        may_eject: impl FnOnce() -> bool,
    ) -> Option<Transition> {
        if ticket.generation != self.generation {
            return None;
        }
        match self.phase {
            Phase::Closed => self.record_closed(outcome, slow, now, may_eject),
            Phase::HalfOpen { .. } => match outcome {
                Outcome::Ignore => {
                    self.release(ticket);
                    None
                }
                Outcome::Failure => Some(self.open(now())),
                Outcome::Success => {
                    let threshold = self.config.success_threshold;
                    let Phase::HalfOpen { successes, .. } = &mut self.phase else {
                        return None;
                    };
                    *successes += 1;
                    if *successes >= threshold {
                        self.trips = 0;
                        self.enter(Phase::Closed);
                        Some(Transition::Closed)
                    } else {
                        None
                    }
                }
            },
            // A ticket of the current generation is never handed out while
            // open.
            Phase::Open { .. } | Phase::Forced => None,
        }
    }

    fn record_closed(
        &mut self,
        outcome: Outcome,
        slow: bool,
        now: impl FnOnce() -> Instant,
        may_eject: impl FnOnce() -> bool,
    ) -> Option<Transition> {
        let failed = match outcome {
            Outcome::Ignore => return None,
            Outcome::Success => {
                self.consecutive_failures = 0;
                false
            }
            Outcome::Failure => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                true
            }
        };
        let now = if failed || self.success_needs_clock() {
            Some(now())
        } else {
            None
        };
        let mut trip = self.config.failure_threshold > 0
            && self.consecutive_failures >= self.config.failure_threshold;
        if let (Some(window), Some(rule)) = (&mut self.window, &self.config.rate) {
            window.push(failed, slow, now);
            let (calls, failures, slows) = window.totals();
            if calls >= rule.minimum_calls && calls > 0 {
                let calls = f64::from(calls);
                let over = |count: u32, rate: Option<f64>| {
                    rate.is_some_and(|r| f64::from(count) / calls >= r)
                };
                trip |= over(failures, rule.failure_rate) || over(slows, rule.slow_call_rate);
            }
        }
        match now {
            Some(now) if trip && may_eject() => Some(self.open(now)),
            _ => None,
        }
    }

    fn open(&mut self, now: Instant) -> Transition {
        self.trips = self.trips.saturating_add(1);
        let wait = self.config.open_for(self.trips);
        self.enter(Phase::Open {
            until: now.checked_add(wait).unwrap_or(now + Duration::from_secs(86_400 * 365)),
        });
        Transition::Opened {
            retry_after: Some(wait),
        }
    }

    /// Opens the circuit until [`reset`](Self::reset).
    pub(crate) fn trip(&mut self) -> Option<Transition> {
        if self.phase == Phase::Forced {
            return None;
        }
        self.enter(Phase::Forced);
        Some(Transition::Opened { retry_after: None })
    }

    /// Closes the circuit and forgets its history.
    pub(crate) fn reset(&mut self) -> Option<Transition> {
        let was_closed = self.is_closed();
        self.trips = 0;
        self.enter(Phase::Closed);
        (!was_closed).then_some(Transition::Closed)
    }

    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        self.generation = self.generation.wrapping_add(1);
        self.consecutive_failures = 0;
        if let Some(w) = &mut self.window {
            w.clear();
        }
    }

    fn ticket(&self, trial: bool) -> Ticket {
        Ticket {
            generation: self.generation,
            trial,
        }
    }
}

// === Sliding windows ===

#[derive(Debug)]
enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

impl Window {
    fn new(kind: SlidingWindow) -> Self {
        match kind {
            SlidingWindow::Count(n) => Window::Count(CountWindow {
                slots: vec![0; n.max(1) as usize],
                next: 0,
                len: 0,
                totals: Totals::default(),
            }),
            SlidingWindow::Time(d) => {
                let n = d.as_secs().clamp(1, super::config::MAX_TIME_WINDOW_SECS) as usize;
                Window::Time(TimeWindow {
                    buckets: vec![Bucket::default(); n],
                    origin: None,
                    last_sec: 0,
                    totals: Totals::default(),
                })
            }
        }
    }

    fn push(&mut self, failed: bool, slow: bool, now: Option<Instant>) {
        match self {
            Window::Count(w) => w.push(failed, slow),
            Window::Time(w) => {
                if let Some(now) = now {
                    w.push(failed, slow, now);
                }
            }
        }
    }

    fn totals(&self) -> (u32, u32, u32) {
        let t = match self {
            Window::Count(w) => w.totals,
            Window::Time(w) => w.totals,
        };
        (t.calls, t.failures, t.slow)
    }

    fn clear(&mut self) {
        match self {
            Window::Count(w) => {
                w.slots.iter_mut().for_each(|s| *s = 0);
                w.next = 0;
                w.len = 0;
                w.totals = Totals::default();
            }
            Window::Time(w) => {
                w.buckets.iter_mut().for_each(|b| *b = Bucket::default());
                w.origin = None;
                w.last_sec = 0;
                w.totals = Totals::default();
            }
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    calls: u32,
    failures: u32,
    slow: u32,
}

const FAILED: u8 = 1;
const SLOW: u8 = 2;

/// The last `n` calls in a ring of flag bytes.
#[derive(Debug)]
struct CountWindow {
    slots: Vec<u8>,
    next: usize,
    len: u32,
    totals: Totals,
}

impl CountWindow {
    fn push(&mut self, failed: bool, slow: bool) {
        let old = self.slots[self.next];
        if self.len as usize == self.slots.len() {
            self.totals.failures -= u32::from(old & FAILED != 0);
            self.totals.slow -= u32::from(old & SLOW != 0);
        } else {
            self.len += 1;
        }
        let new = if failed { FAILED } else { 0 } | if slow { SLOW } else { 0 };
        self.slots[self.next] = new;
        self.totals.failures += u32::from(failed);
        self.totals.slow += u32::from(slow);
        self.totals.calls = self.len;
        self.next = (self.next + 1) % self.slots.len();
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Bucket {
    calls: u32,
    failures: u32,
    slow: u32,
}

/// The calls of the last `n` seconds, in one bucket per second.
#[derive(Debug)]
struct TimeWindow {
    buckets: Vec<Bucket>,
    /// The instant second 0 starts at.
    origin: Option<Instant>,
    /// The latest second a call was recorded in.
    last_sec: u64,
    totals: Totals,
}

impl TimeWindow {
    fn push(&mut self, failed: bool, slow: bool, now: Instant) {
        let origin = *self.origin.get_or_insert(now);
        let sec = now.saturating_duration_since(origin).as_secs();
        let n = self.buckets.len() as u64;
        // Expire the buckets of the seconds skipped since the last call.
        let stale = sec.saturating_sub(self.last_sec).min(n);
        for s in 1..=stale {
            let i = ((self.last_sec + s) % n) as usize;
            let b = std::mem::take(&mut self.buckets[i]);
            self.totals.calls -= b.calls;
            self.totals.failures -= b.failures;
            self.totals.slow -= b.slow;
        }
        self.last_sec = self.last_sec.max(sec);
        let b = &mut self.buckets[(self.last_sec % n) as usize];
        b.calls += 1;
        b.failures += u32::from(failed);
        b.slow += u32::from(slow);
        self.totals.calls += 1;
        self.totals.failures += u32::from(failed);
        self.totals.slow += u32::from(slow);
    }
}
