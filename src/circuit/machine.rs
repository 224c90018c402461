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
    Open {
        until: Instant,
    },
    HalfOpen {
        admitted: u32,
        successes: u32,
    },
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

/// A [`Machine::hint`]; a ticket from [`Hint::admit`] is exactly what
/// [`Machine::acquire`] would hand out in the same state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hint(pub(crate) u64);

impl Hint {
    /// The ticket a closed circuit hands out, if it is closed.
    pub(crate) fn admit(self) -> Option<Ticket> {
        (self.0 & 1 == 1).then_some(Ticket {
            generation: self.0 >> 2,
            trial: false,
        })
    }

    /// Whether `ticket` is of the current generation (no transition since
    /// it was handed out).
    pub(crate) fn is_current(self, ticket: Ticket) -> bool {
        ticket.generation == self.0 >> 2
    }

    /// Whether recording a non-slow success with `ticket` would change
    /// nothing.
    pub(crate) fn success_is_noop(self, ticket: Ticket) -> bool {
        self.0 & 2 == 2 && ticket.generation == self.0 >> 2 && !ticket.trial
    }
}

/// [`Machine::acquire`]'s answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    Admitted(Ticket),
    /// `retry_after` is `None` when forced open or when every trial call is
    /// taken.
    Rejected {
        retry_after: Option<Duration>,
    },
}

/// A change of state, to be published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    /// `retry_after` is `None` when opened by hand.
    Opened {
        retry_after: Option<Duration>,
    },
    HalfOpened,
    Closed,
}

/// Generations wrap within 62 bits, so a gate can pack one with two flags
/// in a `u64` (see [`Machine::hint`]).
const MAX_GENERATION: u64 = u64::MAX >> 2;

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

    /// What the closed-state fast path needs, packed in one word so that a
    /// gate can cache it in an atomic: the generation, whether
    /// [`acquire`](Self::acquire) would admit a non-trial call without
    /// changing anything (closed), and whether recording a non-slow success
    /// of this generation would change nothing either (closed, no failure
    /// in the current run, no window).
    pub(crate) fn hint(&self) -> Hint {
        let closed = self.is_closed();
        let success_is_noop = closed && self.consecutive_failures == 0 && self.window.is_none();
        Hint(self.generation << 2 | u64::from(success_is_noop) << 1 | u64::from(closed))
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
        matches!(self.window, Some(Window::Time(_)))
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
        mut now: impl FnMut() -> Instant,
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
        now: impl FnMut() -> Instant,
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
        let mut now = now;
        let mut cached = None;
        let mut clock = || *cached.get_or_insert_with(&mut now);
        let at = (failed || self.success_needs_clock()).then(&mut clock);
        let mut trip = self.config.failure_threshold > 0
            && self.consecutive_failures >= self.config.failure_threshold;
        if let (Some(window), Some(rule)) = (&mut self.window, &self.config.rate) {
            window.push(failed, slow, at);
            let (calls, failures, slows) = window.totals();
            if calls >= rule.minimum_calls && calls > 0 {
                let calls = f64::from(calls);
                let over = |count: u32, rate: Option<f64>| {
                    rate.is_some_and(|r| f64::from(count) / calls >= r)
                };
                trip |= over(failures, rule.failure_rate) || over(slows, rule.slow_call_rate);
            }
        }
        if trip && may_eject() {
            Some(self.open(clock()))
        } else {
            None
        }
    }

    fn open(&mut self, now: Instant) -> Transition {
        self.trips = self.trips.saturating_add(1);
        let wait = self.config.open_for(self.trips);
        // The config caps every wait at MAX_OPEN, so this cannot overflow;
        // if it did, the circuit would turn half-open at once.
        self.enter(Phase::Open {
            until: now.checked_add(wait).unwrap_or(now),
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
        self.generation = (self.generation + 1) & MAX_GENERATION;
        self.consecutive_failures = 0;
        if let Some(w) = &mut self.window {
            w.clear();
        }
    }

    #[cfg(test)]
    fn clone_for_test(&self) -> Self {
        Self {
            config: self.config.clone(),
            phase: self.phase,
            generation: self.generation,
            trips: self.trips,
            consecutive_failures: self.consecutive_failures,
            window: None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::circuit::config::{Backoff, RateRule};
    use proptest::prelude::*;

    const S: Duration = Duration::from_secs(1);

    fn machine(f: impl FnOnce(&mut CircuitBreakerConfig)) -> Machine {
        let mut c = CircuitBreakerConfig {
            failure_threshold: 3,
            reset_timeout: 10 * S,
            ..Default::default()
        };
        f(&mut c);
        c.validate().unwrap();
        Machine::new(Arc::new(c))
    }

    fn admit(m: &mut Machine, now: Instant) -> Ticket {
        match m.acquire(|| now).0 {
            Admission::Admitted(t) => t,
            other => panic!("expected admission, got {other:?}"),
        }
    }

    fn rec(m: &mut Machine, t: Ticket, o: Outcome, now: Instant) -> Option<Transition> {
        m.record(t, o, false, || now, || true)
    }

    fn call(m: &mut Machine, o: Outcome, now: Instant) -> Option<Transition> {
        let t = admit(m, now);
        rec(m, t, o, now)
    }

    #[test]
    fn closed_opens_after_exactly_threshold_consecutive_failures() {
        let t0 = Instant::now();
        let mut m = machine(|_| {});
        assert_eq!(call(&mut m, Outcome::Failure, t0), None);
        assert_eq!(call(&mut m, Outcome::Failure, t0), None);
        // A success breaks the run; an ignored call does not.
        assert_eq!(call(&mut m, Outcome::Success, t0), None);
        assert_eq!(call(&mut m, Outcome::Failure, t0), None);
        assert_eq!(call(&mut m, Outcome::Ignore, t0), None);
        assert_eq!(call(&mut m, Outcome::Failure, t0), None);
        assert_eq!(m.state(t0), CircuitState::Closed);
        assert_eq!(
            call(&mut m, Outcome::Failure, t0),
            Some(Transition::Opened {
                retry_after: Some(10 * S)
            })
        );
        assert_eq!(m.state(t0), CircuitState::Open);
        assert_eq!(m.reopens_at(), Some(t0 + 10 * S));
    }

    #[test]
    fn open_rejects_until_the_reset_timeout_then_admits_one_trial() {
        let t0 = Instant::now();
        let mut m = machine(|_| {});
        (0..3).for_each(|_| {
            call(&mut m, Outcome::Failure, t0);
        });
        assert_eq!(
            m.acquire(|| t0 + 4 * S),
            (
                Admission::Rejected {
                    retry_after: Some(6 * S)
                },
                None
            )
        );
        assert_eq!(m.state(t0 + 10 * S), CircuitState::HalfOpen);
        let (a, tr) = m.acquire(|| t0 + 10 * S);
        assert_eq!(tr, Some(Transition::HalfOpened));
        let Admission::Admitted(trial) = a else {
            panic!("{a:?}")
        };
        assert!(trial.is_trial());
        // The single trial is taken: everyone else waits, with no timer.
        assert_eq!(
            m.acquire(|| t0 + 11 * S),
            (Admission::Rejected { retry_after: None }, None)
        );
        assert_eq!(
            rec(&mut m, trial, Outcome::Success, t0 + 11 * S),
            Some(Transition::Closed)
        );
        assert_eq!(m.state(t0 + 11 * S), CircuitState::Closed);
    }

    #[test]
    fn half_open_needs_success_threshold_and_reopens_on_one_failure() {
        let t0 = Instant::now();
        let mut m = machine(|c| {
            c.half_open_max_calls = 3;
            c.success_threshold = 2;
        });
        (0..3).for_each(|_| {
            call(&mut m, Outcome::Failure, t0);
        });
        let t1 = t0 + 10 * S;
        let trials: Vec<_> = (0..3).map(|_| admit(&mut m, t1)).collect();
        assert!(matches!(
            m.acquire(|| t1).0,
            Admission::Rejected { retry_after: None }
        ));
        assert_eq!(rec(&mut m, trials[0], Outcome::Success, t1), None);
        assert_eq!(
            rec(&mut m, trials[1], Outcome::Success, t1),
            Some(Transition::Closed)
        );
        // The third trial comes back from an earlier generation: ignored.
        assert_eq!(rec(&mut m, trials[2], Outcome::Failure, t1), None);
        assert_eq!(m.state(t1), CircuitState::Closed);

        (0..3).for_each(|_| {
            call(&mut m, Outcome::Failure, t1);
        });
        let t2 = t1 + 10 * S;
        let trial = admit(&mut m, t2);
        let ok = admit(&mut m, t2);
        assert_eq!(rec(&mut m, ok, Outcome::Success, t2), None);
        assert_eq!(
            rec(&mut m, trial, Outcome::Failure, t2),
            Some(Transition::Opened {
                retry_after: Some(10 * S)
            })
        );
        assert_eq!(m.state(t2 + 9 * S), CircuitState::Open);
    }

    #[test]
    fn backoff_grows_with_trips_in_a_row_and_resets_on_close() {
        let t0 = Instant::now();
        let mut m = machine(|c| {
            c.failure_threshold = 1;
            c.reset_timeout = S;
            c.backoff = Some(Backoff::new(2.0, 5 * S));
        });
        let mut now = t0;
        let mut waits = vec![];
        let opened = |t: Option<Transition>| match t {
            Some(Transition::Opened {
                retry_after: Some(d),
            }) => d,
            other => panic!("{other:?}"),
        };
        waits.push(opened(call(&mut m, Outcome::Failure, now)));
        for _ in 0..4 {
            now = m.reopens_at().unwrap();
            waits.push(opened(call(&mut m, Outcome::Failure, now)));
        }
        assert_eq!(waits, [S, 2 * S, 4 * S, 5 * S, 5 * S]);
        now = m.reopens_at().unwrap();
        assert_eq!(
            call(&mut m, Outcome::Success, now),
            Some(Transition::Closed)
        );
        assert_eq!(opened(call(&mut m, Outcome::Failure, now)), S);
    }

    #[test]
    fn releasing_frees_a_trial_permit_without_counting() {
        let t0 = Instant::now();
        let mut m = machine(|_| {});
        let closed = admit(&mut m, t0);
        assert!(!m.release(closed), "closed calls hold no permit");
        (0..3).for_each(|_| {
            call(&mut m, Outcome::Failure, t0);
        });
        let t1 = t0 + 10 * S;
        let trial = admit(&mut m, t1);
        assert!(matches!(m.acquire(|| t1).0, Admission::Rejected { .. }));
        assert!(m.release(trial));
        assert!(!m.release(trial), "a permit is freed once");
        let again = admit(&mut m, t1);
        // An ignored trial also gives its permit back.
        assert_eq!(rec(&mut m, again, Outcome::Ignore, t1), None);
        assert_eq!(m.state(t1), CircuitState::HalfOpen);
        let last = admit(&mut m, t1);
        assert_eq!(
            rec(&mut m, last, Outcome::Success, t1),
            Some(Transition::Closed)
        );
    }

    #[test]
    fn results_from_an_earlier_generation_are_ignored() {
        let t0 = Instant::now();
        let mut m = machine(|c| c.failure_threshold = 1);
        let slow = admit(&mut m, t0);
        call(&mut m, Outcome::Failure, t0);
        let t1 = t0 + 10 * S;
        let trial = admit(&mut m, t1);
        // The closed-state call finishing now must not decide the trial.
        assert_eq!(rec(&mut m, slow, Outcome::Failure, t1), None);
        assert!(!m.release(slow));
        assert_eq!(
            rec(&mut m, trial, Outcome::Success, t1),
            Some(Transition::Closed)
        );
    }

    #[test]
    fn trip_holds_open_until_reset() {
        let t0 = Instant::now();
        let mut m = machine(|_| {});
        assert_eq!(
            m.reset(),
            None,
            "resetting a closed circuit is no transition"
        );
        assert_eq!(m.trip(), Some(Transition::Opened { retry_after: None }));
        assert_eq!(m.trip(), None);
        let later = t0 + Duration::from_secs(86_400);
        assert_eq!(
            m.acquire(|| later),
            (Admission::Rejected { retry_after: None }, None)
        );
        assert_eq!(m.state(later), CircuitState::Open);
        assert_eq!(m.reopens_at(), None);
        assert_eq!(m.reset(), Some(Transition::Closed));
        assert_eq!(call(&mut m, Outcome::Success, later), None);
        // Reset also clears the run of failures.
        call(&mut m, Outcome::Failure, later);
        call(&mut m, Outcome::Failure, later);
        m.trip();
        m.reset();
        assert_eq!(call(&mut m, Outcome::Failure, later), None);
    }

    #[test]
    fn ejection_refusal_keeps_the_circuit_closed_and_asks_again() {
        let t0 = Instant::now();
        let mut m = machine(|c| c.failure_threshold = 2);
        let mut asked = 0;
        for _ in 0..4 {
            let t = admit(&mut m, t0);
            let tr = m.record(
                t,
                Outcome::Failure,
                false,
                || t0,
                || {
                    asked += 1;
                    false
                },
            );
            assert_eq!(tr, None);
        }
        assert_eq!(asked, 3, "asked at the 2nd, 3rd and 4th failure");
        assert_eq!(m.state(t0), CircuitState::Closed);
        let t = admit(&mut m, t0);
        assert!(
            m.record(t, Outcome::Failure, false, || t0, || true)
                .is_some()
        );
    }

    #[test]
    fn the_closed_fast_path_never_reads_the_clock() {
        let mut m = machine(|_| {});
        for _ in 0..10 {
            let t = match m.acquire(|| panic!("clock read")).0 {
                Admission::Admitted(t) => t,
                other => panic!("{other:?}"),
            };
            m.record(t, Outcome::Success, false, || panic!("clock read"), || true);
        }
    }

    #[test]
    fn count_window_failure_rate_with_minimum_calls() {
        let t0 = Instant::now();
        let mut m = machine(|c| {
            c.failure_threshold = 0;
            c.rate = Some(RateRule::failure_rate(SlidingWindow::Count(4), 4, 0.5));
        });
        // F F: below the minimum number of calls, even at 100 %.
        assert_eq!(call(&mut m, Outcome::Failure, t0), None);
        assert_eq!(call(&mut m, Outcome::Failure, t0), None);
        assert_eq!(call(&mut m, Outcome::Success, t0), None);
        // F F S S: 4 calls, 50 %: opens.
        assert!(matches!(
            call(&mut m, Outcome::Success, t0),
            Some(Transition::Opened { .. })
        ));
        // After closing, the window starts empty; old failures slide out.
        let t1 = t0 + 10 * S;
        call(&mut m, Outcome::Success, t1);
        for o in [
            Outcome::Failure,
            Outcome::Success,
            Outcome::Success,
            Outcome::Success,
        ] {
            assert_eq!(call(&mut m, o, t1), None);
        }
        // Window: F S S S (25 %) → S S S F (25 %) → S S F F (50 %).
        assert_eq!(call(&mut m, Outcome::Failure, t1), None);
        assert!(call(&mut m, Outcome::Failure, t1).is_some());
    }

    #[test]
    fn time_window_forgets_calls_older_than_the_window() {
        let t0 = Instant::now();
        let mut m = machine(|c| {
            c.failure_threshold = 0;
            c.rate = Some(RateRule::failure_rate(SlidingWindow::Time(10 * S), 3, 0.6));
        });
        call(&mut m, Outcome::Failure, t0);
        call(&mut m, Outcome::Failure, t0 + S);
        // 11 s later the first two failures have left the window.
        call(&mut m, Outcome::Success, t0 + 12 * S);
        call(&mut m, Outcome::Failure, t0 + 12 * S);
        assert_eq!(call(&mut m, Outcome::Success, t0 + 13 * S), None);
        assert_eq!(m.state(t0 + 13 * S), CircuitState::Closed);
        // 2 of 4 in the window… then 3 of 5 = 60 %.
        assert_eq!(call(&mut m, Outcome::Failure, t0 + 14 * S), None);
        assert!(call(&mut m, Outcome::Failure, t0 + 15 * S).is_some());
    }

    #[test]
    fn slow_call_rate_opens() {
        let t0 = Instant::now();
        let mut m = machine(|c| {
            c.failure_threshold = 0;
            c.slow_call_duration = Some(S);
            c.rate =
                Some(RateRule::failure_rate(SlidingWindow::Count(10), 2, 1.0).slow_call_rate(0.5));
        });
        let t = admit(&mut m, t0);
        assert_eq!(m.record(t, Outcome::Success, false, || t0, || true), None);
        let t = admit(&mut m, t0);
        assert!(
            m.record(t, Outcome::Success, true, || t0, || true)
                .is_some(),
            "1 slow of 2 = 50 %"
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Acquire,
        Record(usize, u8),
        Release(usize),
        Advance(u64),
        Trip,
        Reset,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => Just(Op::Acquire),
            4 => (any::<usize>(), 0u8..3).prop_map(|(i, o)| Op::Record(i, o)),
            1 => any::<usize>().prop_map(Op::Release),
            2 => (0u64..8).prop_map(Op::Advance),
            1 => Just(Op::Trip),
            1 => Just(Op::Reset),
        ]
    }

    proptest! {
        /// Any sequence of calls, outcomes, cancellations, time and manual
        /// trips keeps the invariants: never more than `half_open_max_calls`
        /// trials per half-open period (not counting those given back), only legal transitions, and a closed
        /// circuit opens exactly at the threshold-th consecutive failure.
        #[test]
        fn machine_invariants(ops in proptest::collection::vec(op(), 1..200), max in 1u32..4) {
            let t0 = Instant::now();
            let mut m = machine(|c| {
                c.half_open_max_calls = max;
                c.success_threshold = max;
                c.reset_timeout = 5 * S;
            });
            let mut now = t0;
            let mut held: Vec<Ticket> = vec![];
            let mut run = 0u32; // the model's count of consecutive failures
            let mut trials_this_period = 0u32;
            for op in ops {
                let before = m.state(now);
                let manual = matches!(op, Op::Trip);
                // The hint predicts the machine exactly.
                let hint = m.hint();
                if let Some(ticket) = hint.admit() {
                    let mut probe = m.clone_for_test();
                    prop_assert_eq!(probe.acquire(|| now).0, Admission::Admitted(ticket));
                    if hint.success_is_noop(ticket) {
                        let mut probe = m.clone_for_test();
                        prop_assert_eq!(rec(&mut probe, ticket, Outcome::Success, now), None);
                        prop_assert_eq!(probe.hint(), hint);
                    }
                } else {
                    prop_assert!(!m.is_closed());
                }
                let transition = match op {
                    Op::Acquire => {
                        let (a, t) = m.acquire(|| now);
                        if t == Some(Transition::HalfOpened) {
                            trials_this_period = 0;
                        }
                        match a {
                            Admission::Admitted(ticket) => {
                                prop_assert_ne!(before, CircuitState::Open);
                                if ticket.is_trial() {
                                    trials_this_period += 1;
                                    let live = held.iter().filter(|t| t.is_trial() && t.generation == m.generation).count();
                                    prop_assert!(live < max as usize);
                                }
                                held.push(ticket);
                            }
                            Admission::Rejected { retry_after } => {
                                prop_assert_ne!(before, CircuitState::Closed);
                                if let Some(d) = retry_after { prop_assert!(d > Duration::ZERO); }
                            }
                        }
                        t
                    }
                    Op::Record(i, o) if !held.is_empty() => {
                        let ticket = held.swap_remove(i % held.len());
                        let outcome = [Outcome::Success, Outcome::Failure, Outcome::Ignore][o as usize];
                        let current = ticket.generation == m.generation;
                        let closed = m.is_closed();
                        let t = rec(&mut m, ticket, outcome, now);
                        if current && ticket.is_trial() && outcome == Outcome::Ignore {
                            trials_this_period -= 1; // given back uncounted
                        }
                        if current && closed {
                            match outcome {
                                Outcome::Success => run = 0,
                                Outcome::Failure => run += 1,
                                Outcome::Ignore => {}
                            }
                            prop_assert_eq!(t.is_some(), run >= 3, "run {}", run);
                        }
                        if !current { prop_assert_eq!(t, None); }
                        t
                    }
                    Op::Release(i) if !held.is_empty() => {
                        let ticket = held.swap_remove(i % held.len());
                        if m.release(ticket) {
                            trials_this_period -= 1;
                        }
                        None
                    }
                    Op::Advance(s) => { now += Duration::from_secs(s); None }
                    Op::Trip => m.trip(),
                    Op::Reset => { run = 0; m.reset() }
                    _ => None,
                };
                prop_assert!(trials_this_period <= max);
                match transition {
                    Some(Transition::Opened { .. }) => {
                        // Only a manual trip opens an open circuit (forcing it).
                        prop_assert!(manual || before != CircuitState::Open);
                        run = 0;
                    }
                    Some(Transition::HalfOpened) => {
                        prop_assert_eq!(before, CircuitState::HalfOpen, "only a due open circuit turns half-open");
                    }
                    Some(Transition::Closed) => {
                        prop_assert_ne!(before, CircuitState::Closed);
                        run = 0;
                    }
                    None => {}
                }
            }
        }
    }
}
