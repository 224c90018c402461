//! [`CircuitBreakerConfig`]: when a circuit opens, how long it stays open and
//! how it closes again.

use std::time::Duration;

use super::error::ConfigError;

/// How a circuit decides to open, wait and close; shared by
/// [`CircuitBreaker`](super::CircuitBreaker) and
/// [`CircuitBreakerLayer`](super::CircuitBreakerLayer).
///
/// The defaults are the original module's: open after 5 consecutive failures,
/// try again after 30 seconds with one trial call, close on its success.
///
/// ```
/// use std::time::Duration;
/// use fluxor_registry::CircuitBreakerConfig;
///
/// let config = CircuitBreakerConfig {
///     failure_threshold: 5,
///     reset_timeout: Duration::from_secs(30),
///     ..Default::default()
/// };
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct CircuitBreakerConfig {
    /// Open after this many failures in a row while closed. `0` turns the
    /// consecutive-failure rule off (then [`rate`](Self::rate) must be set).
    pub failure_threshold: u32,
    /// How long an open circuit rejects calls before it lets trial calls
    /// through (half-open). With [`backoff`](Self::backoff), the first wait.
    pub reset_timeout: Duration,
    /// How many trial calls a half-open circuit admits in all (not at once):
    /// every other call is rejected until the trials decide. At least 1.
    pub half_open_max_calls: u32,
    /// How many trial calls must succeed to close the circuit; any failed
    /// trial reopens it. At least 1, at most `half_open_max_calls`.
    pub success_threshold: u32,
    /// Also open when the failure or slow-call rate over a sliding window
    /// crosses a threshold (resilience4j's model).
    pub rate: Option<RateRule>,
    /// A call that takes longer than this is *slow*: it counts toward
    /// [`RateRule::slow_call_rate`]. Classifiers see the elapsed time too, and
    /// may call a slow call a failure.
    pub slow_call_duration: Option<Duration>,
    /// Grow the open period with each trip in a row.
    pub backoff: Option<Backoff>,
    /// At most this share (in percent, 1–100) of the endpoints made by one
    /// [`CircuitBreakerLayer`](super::CircuitBreakerLayer) may be open at
    /// once (Envoy's `max_ejection_percent`); at least one may always open.
    /// The default, 100, puts no limit.
    pub max_ejection_percent: u8,
    /// How many keys a [`CircuitBreaker`](super::CircuitBreaker) keeps at
    /// most; past it, idle closed circuits are evicted first. At least 1.
    pub max_keys: usize,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            reset_timeout: Duration::from_secs(30),
            half_open_max_calls: 1,
            success_threshold: 1,
            rate: None,
            slow_call_duration: None,
            backoff: None,
            max_ejection_percent: 100,
            max_keys: 10_000,
        }
    }
}

/// Open when a rate over a sliding window crosses a threshold; see
/// [`CircuitBreakerConfig::rate`].
#[derive(Debug, Clone, PartialEq)]
pub struct RateRule {
    /// The calls the rates are taken over.
    pub window: SlidingWindow,
    /// No rate is judged before the window holds this many calls. At least 1.
    pub minimum_calls: u32,
    /// Open when this share of calls (0 < rate ≤ 1) failed.
    pub failure_rate: Option<f64>,
    /// Open when this share of calls (0 < rate ≤ 1) was slower than
    /// [`CircuitBreakerConfig::slow_call_duration`].
    pub slow_call_rate: Option<f64>,
}

impl RateRule {
    /// Open when at least `failure_rate` of the calls in `window` failed,
    /// once it holds `minimum_calls` calls.
    pub fn failure_rate(window: SlidingWindow, minimum_calls: u32, failure_rate: f64) -> Self {
        Self {
            window,
            minimum_calls,
            failure_rate: Some(failure_rate),
            slow_call_rate: None,
        }
    }

    /// Also open when at least `rate` of the calls in the window were slow.
    pub fn slow_call_rate(mut self, rate: f64) -> Self {
        self.slow_call_rate = Some(rate);
        self
    }
}

/// The calls a [`RateRule`] looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlidingWindow {
    /// The last `n` calls (1 ≤ n ≤ 65,536).
    Count(u32),
    /// The calls of the last `d`, in one-second buckets (1 s ≤ d ≤ 1 h, whole
    /// seconds).
    Time(Duration),
}

/// Exponential growth of the open period with consecutive trips; see
/// [`CircuitBreakerConfig::backoff`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Each trip in a row multiplies the open period by this (≥ 1).
    pub multiplier: f64,
    /// The open period never exceeds this (≥ `reset_timeout`).
    pub max: Duration,
}

impl Backoff {
    /// Multiply by `multiplier` each trip in a row, up to `max`.
    pub fn new(multiplier: f64, max: Duration) -> Self {
        Self { multiplier, max }
    }
}

/// The longest an open circuit may wait (`reset_timeout`, `backoff.max`):
/// 365 days.
pub const MAX_OPEN: Duration = Duration::from_secs(365 * 86_400);
/// The largest count window.
pub(crate) const MAX_COUNT_WINDOW: u32 = 1 << 16;
/// The longest time window, in seconds.
pub(crate) const MAX_TIME_WINDOW_SECS: u64 = 3600;

fn check_rate(field: &'static str, rate: Option<f64>) -> Result<(), ConfigError> {
    match rate {
        Some(r) if !(r > 0.0 && r <= 1.0) => Err(ConfigError::new(
            field,
            format!("must be a share in (0, 1], got {r}"),
        )),
        _ => Ok(()),
    }
}

impl CircuitBreakerConfig {
    /// This config with every field out of range replaced by the nearest
    /// valid value, and the errors that were found (empty when it was valid).
    ///
    /// ```
    /// use fluxor_registry::CircuitBreakerConfig;
    ///
    /// let (fixed, errors) = CircuitBreakerConfig { failure_threshold: 0, ..Default::default() }.sanitized();
    /// assert_eq!(fixed.failure_threshold, 1);
    /// assert_eq!(errors[0].field(), "failure_threshold");
    /// ```
    pub fn sanitized(mut self) -> (Self, Vec<ConfigError>) {
        let mut errors = Vec::new();
        // Each repair fixes the field named; a handful of rounds fix all.
        for _ in 0..32 {
            match self.validate() {
                Ok(()) => break,
                Err(e) => {
                    self.repair(e.field());
                    errors.push(e);
                }
            }
        }
        (self, errors)
    }

    pub(crate) fn sanitized_logged(self) -> Self {
        let (config, errors) = self.sanitized();
        for e in errors {
            tracing::warn!(target: "fluxor_registry::circuit", field = e.field(), "{e}; using the nearest valid value");
        }
        config
    }

    fn repair(&mut self, field: &str) {
        let clamp_rate = |r: Option<f64>| r.filter(|r| *r > 0.0).map(|r| r.min(1.0));
        match field {
            "failure_threshold" => self.failure_threshold = 1,
            "reset_timeout" => {
                self.reset_timeout = self.reset_timeout.clamp(Duration::from_millis(1), MAX_OPEN);
            }
            "half_open_max_calls" => self.half_open_max_calls = 1,
            "success_threshold" => {
                self.success_threshold = self
                    .success_threshold
                    .clamp(1, self.half_open_max_calls.max(1));
            }
            "rate.window" => {
                if let Some(rule) = &mut self.rate {
                    rule.window = match rule.window {
                        SlidingWindow::Count(n) => {
                            SlidingWindow::Count(n.clamp(1, MAX_COUNT_WINDOW))
                        }
                        SlidingWindow::Time(d) => SlidingWindow::Time(Duration::from_secs(
                            d.as_secs().clamp(1, MAX_TIME_WINDOW_SECS),
                        )),
                    };
                }
            }
            "rate.minimum_calls" => {
                if let Some(rule) = &mut self.rate {
                    rule.minimum_calls = 1;
                }
            }
            "rate.failure_rate" | "rate.slow_call_rate" => {
                if let Some(rule) = &mut self.rate {
                    rule.failure_rate = clamp_rate(rule.failure_rate);
                    rule.slow_call_rate = clamp_rate(rule.slow_call_rate);
                    if rule.slow_call_rate.is_some() && self.slow_call_duration.is_none() {
                        rule.slow_call_rate = None;
                    }
                }
                if self
                    .rate
                    .as_ref()
                    .is_some_and(|r| r.failure_rate.is_none() && r.slow_call_rate.is_none())
                {
                    self.rate = None;
                }
            }
            "rate" => self.rate = None,
            "backoff.multiplier" => {
                if let Some(b) = &mut self.backoff {
                    b.multiplier = if b.multiplier.is_finite() {
                        b.multiplier.max(1.0)
                    } else {
                        1.0
                    };
                }
            }
            "backoff.max" => {
                if let Some(b) = &mut self.backoff {
                    b.max = b
                        .max
                        .clamp(self.reset_timeout, MAX_OPEN.max(self.reset_timeout));
                }
            }
            "max_ejection_percent" => {
                self.max_ejection_percent = self.max_ejection_percent.clamp(1, 100)
            }
            "max_keys" => self.max_keys = 1,
            _ => {}
        }
        if self.failure_threshold == 0 && self.rate.is_none() {
            self.failure_threshold = 1;
        }
    }

    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.failure_threshold == 0 && self.rate.is_none() {
            return Err(ConfigError::new(
                "failure_threshold",
                "is 0 and no rate rule is set, so the circuit could never open",
            ));
        }
        if self.reset_timeout.is_zero() || self.reset_timeout > MAX_OPEN {
            return Err(ConfigError::new(
                "reset_timeout",
                format!("must be in (0, 365 days], got {:?}", self.reset_timeout),
            ));
        }
        if self.half_open_max_calls == 0 {
            return Err(ConfigError::new(
                "half_open_max_calls",
                "must be at least 1",
            ));
        }
        if self.success_threshold == 0 || self.success_threshold > self.half_open_max_calls {
            return Err(ConfigError::new(
                "success_threshold",
                format!(
                    "must be in 1..={} (half_open_max_calls), got {}",
                    self.half_open_max_calls, self.success_threshold
                ),
            ));
        }
        if let Some(rule) = &self.rate {
            match rule.window {
                SlidingWindow::Count(n) if n == 0 || n > MAX_COUNT_WINDOW => {
                    return Err(ConfigError::new(
                        "rate.window",
                        format!("count must be in 1..={MAX_COUNT_WINDOW}, got {n}"),
                    ));
                }
                SlidingWindow::Time(d)
                    if d.as_secs() == 0
                        || d.as_secs() > MAX_TIME_WINDOW_SECS
                        || d.subsec_nanos() != 0 =>
                {
                    return Err(ConfigError::new(
                        "rate.window",
                        format!(
                            "time must be whole seconds in 1..={MAX_TIME_WINDOW_SECS}, got {d:?}"
                        ),
                    ));
                }
                _ => {}
            }
            if rule.minimum_calls == 0 {
                return Err(ConfigError::new("rate.minimum_calls", "must be at least 1"));
            }
            if rule.failure_rate.is_none() && rule.slow_call_rate.is_none() {
                return Err(ConfigError::new(
                    "rate",
                    "sets neither failure_rate nor slow_call_rate",
                ));
            }
            check_rate("rate.failure_rate", rule.failure_rate)?;
            check_rate("rate.slow_call_rate", rule.slow_call_rate)?;
            if rule.slow_call_rate.is_some() && self.slow_call_duration.is_none() {
                return Err(ConfigError::new(
                    "rate.slow_call_rate",
                    "is set but slow_call_duration is not",
                ));
            }
        }
        if let Some(backoff) = &self.backoff {
            if !(backoff.multiplier >= 1.0 && backoff.multiplier.is_finite()) {
                return Err(ConfigError::new(
                    "backoff.multiplier",
                    format!("must be a finite number ≥ 1, got {}", backoff.multiplier),
                ));
            }
            if backoff.max > MAX_OPEN {
                return Err(ConfigError::new(
                    "backoff.max",
                    format!("must be at most 365 days, got {:?}", backoff.max),
                ));
            }
            if backoff.max < self.reset_timeout {
                return Err(ConfigError::new(
                    "backoff.max",
                    format!(
                        "{:?} is shorter than reset_timeout {:?}",
                        backoff.max, self.reset_timeout
                    ),
                ));
            }
        }
        if self.max_ejection_percent == 0 || self.max_ejection_percent > 100 {
            return Err(ConfigError::new(
                "max_ejection_percent",
                format!("must be in 1..=100, got {}", self.max_ejection_percent),
            ));
        }
        if self.max_keys == 0 {
            return Err(ConfigError::new("max_keys", "must be at least 1"));
        }
        Ok(())
    }

    /// How long the circuit stays open after `trips` trips in a row (≥ 1).
    pub(crate) fn open_for(&self, trips: u32) -> Duration {
        match &self.backoff {
            None => self.reset_timeout,
            Some(b) => {
                let exp = i32::try_from(trips.saturating_sub(1)).unwrap_or(i32::MAX);
                let secs = self.reset_timeout.as_secs_f64() * b.multiplier.powi(exp);
                if secs.is_finite() && secs < b.max.as_secs_f64() {
                    Duration::from_secs_f64(secs)
                } else {
                    b.max
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitized_repairs_every_bad_field_to_a_valid_config() {
        let bad = CircuitBreakerConfig {
            failure_threshold: 0,
            reset_timeout: Duration::ZERO,
            half_open_max_calls: 0,
            success_threshold: 0,
            max_ejection_percent: 0,
            max_keys: 0,
            backoff: Some(Backoff::new(f64::NAN, Duration::ZERO)),
            ..Default::default()
        };
        let (fixed, errors) = bad.sanitized();
        assert_eq!(fixed.validate(), Ok(()));
        let fields: Vec<&str> = errors.iter().map(ConfigError::field).collect();
        for f in [
            "failure_threshold",
            "reset_timeout",
            "half_open_max_calls",
            "success_threshold",
            "max_ejection_percent",
            "max_keys",
        ] {
            assert!(fields.contains(&f), "{f} not reported in {fields:?}");
        }
        let (same, none) = CircuitBreakerConfig::default().sanitized();
        assert!(none.is_empty());
        assert_eq!(
            same.failure_threshold,
            CircuitBreakerConfig::default().failure_threshold
        );
    }

    #[test]
    fn defaults_are_valid_and_the_original_contract() {
        let c = CircuitBreakerConfig::default();
        c.validate().unwrap();
        assert_eq!(c.failure_threshold, 5);
        assert_eq!(c.reset_timeout, Duration::from_secs(30));
    }

    #[test]
    fn each_bad_field_is_named() {
        let bad = |f: fn(&mut CircuitBreakerConfig)| {
            let mut c = CircuitBreakerConfig::default();
            f(&mut c);
            c.validate().unwrap_err().field()
        };
        assert_eq!(bad(|c| c.failure_threshold = 0), "failure_threshold");
        assert_eq!(bad(|c| c.reset_timeout = Duration::ZERO), "reset_timeout");
        assert_eq!(bad(|c| c.reset_timeout = Duration::MAX), "reset_timeout");
        assert_eq!(bad(|c| c.half_open_max_calls = 0), "half_open_max_calls");
        assert_eq!(bad(|c| c.success_threshold = 2), "success_threshold");
        assert_eq!(bad(|c| c.max_ejection_percent = 0), "max_ejection_percent");
        assert_eq!(
            bad(|c| c.max_ejection_percent = 101),
            "max_ejection_percent"
        );
        assert_eq!(bad(|c| c.max_keys = 0), "max_keys");
        assert_eq!(
            bad(|c| c.rate = Some(RateRule::failure_rate(SlidingWindow::Count(0), 1, 0.5))),
            "rate.window"
        );
        assert_eq!(
            bad(|c| {
                c.rate = Some(RateRule::failure_rate(
                    SlidingWindow::Time(Duration::from_millis(1500)),
                    1,
                    0.5,
                ))
            }),
            "rate.window"
        );
        assert_eq!(
            bad(|c| c.rate = Some(RateRule::failure_rate(SlidingWindow::Count(10), 0, 0.5))),
            "rate.minimum_calls"
        );
        assert_eq!(
            bad(|c| c.rate = Some(RateRule::failure_rate(
                SlidingWindow::Count(10),
                1,
                f64::NAN
            ))),
            "rate.failure_rate"
        );
        assert_eq!(
            bad(|c| c.rate = Some(RateRule::failure_rate(SlidingWindow::Count(10), 1, 1.5))),
            "rate.failure_rate"
        );
        assert_eq!(
            bad(|c| {
                c.rate = Some(
                    RateRule::failure_rate(SlidingWindow::Count(10), 1, 0.5).slow_call_rate(0.5),
                )
            }),
            "rate.slow_call_rate"
        );
        assert_eq!(
            bad(|c| c.backoff = Some(Backoff::new(0.5, Duration::from_secs(60)))),
            "backoff.multiplier"
        );
        assert_eq!(
            bad(|c| c.backoff = Some(Backoff::new(2.0, Duration::from_secs(1)))),
            "backoff.max"
        );
        assert_eq!(
            bad(|c| c.backoff = Some(Backoff::new(2.0, Duration::MAX))),
            "backoff.max"
        );
    }

    #[test]
    fn backoff_grows_to_its_max() {
        let c = CircuitBreakerConfig {
            reset_timeout: Duration::from_secs(1),
            backoff: Some(Backoff::new(2.0, Duration::from_secs(10))),
            ..Default::default()
        };
        let waits: Vec<_> = (1..=6).map(|t| c.open_for(t).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 10, 10]);
        assert_eq!(c.open_for(u32::MAX), Duration::from_secs(10));
    }
}
