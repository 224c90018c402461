//! The health state machine: pure, no I/O, time passed in.
//!
//! One [`CheckState`] per check turns a stream of raw results into the
//! check's status with hysteresis, and [`aggregate`] folds an instance's
//! checks into one status. Rules, after Consul and Envoy:
//!
//! * A check starts [`Unknown`]: the instance gets no traffic until it
//!   first passes. Its very first healthy result counts at once (Envoy
//!   skips the healthy threshold for a new host), and a first failure
//!   makes it [`Critical`] at once (no traffic changes either way).
//! * A healthy check (passing or warning) turns critical only after
//!   `failures_before_critical` critical results in a row; a critical one
//!   turns healthy only after `success_before_passing` healthy results in a
//!   row (Consul's `failures_before_critical` / `success_before_passing`,
//!   Envoy's unhealthy / healthy thresholds).
//! * Between passing and warning a healthy check moves at once: both serve
//!   traffic (Consul's rule for HTTP 429).
//! * An [`Unknown`] result counts as a failure.
//! * The instance's status is the worst of its checks' (critical, then
//!   unknown, then warning, then passing); with no checks it is passing.
//!
//! [`Unknown`]: HealthStatus::Unknown
//! [`Critical`]: HealthStatus::Critical
//!
//! # Examples
//!
//! ```
//! use fluxor_registry::HealthStatus::{Critical, Passing};
//! use fluxor_registry::health::{CheckState, Thresholds};
//! use tokio::time::Instant;
//!
//! let thresholds = Thresholds { success_before_passing: 2, failures_before_critical: 3 };
//! let now = Instant::now();
//! let mut check = CheckState::new();
//! check.observe(Passing, thresholds, now); // a first pass counts at once
//! assert_eq!(check.status(), Passing);
//! check.observe(Critical, thresholds, now);
//! check.observe(Critical, thresholds, now);
//! assert_eq!(check.status(), Passing); // two failures of three
//! assert!(check.observe(Critical, thresholds, now));
//! assert_eq!(check.status(), Critical);
//! check.observe(Passing, thresholds, now);
//! assert_eq!(check.status(), Critical); // one success of two
//! ```

use std::time::Duration;

use tokio::time::Instant;

use crate::instance::HealthStatus;

/// How many results in a row flip a check; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Thresholds {
    /// Healthy results in a row that turn a critical check healthy.
    pub success_before_passing: u32,
    /// Critical results in a row that turn a healthy check critical.
    pub failures_before_critical: u32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            success_before_passing: 1,
            failures_before_critical: 1,
        }
    }
}

/// The state of one check: its status and its consecutive counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckState {
    status: HealthStatus,
    successes: u32,
    failures: u32,
    critical_since: Option<Instant>,
}

impl Default for CheckState {
    fn default() -> Self {
        Self::new()
    }
}

impl CheckState {
    /// A check that has not run: [`HealthStatus::Unknown`].
    pub fn new() -> Self {
        Self {
            status: HealthStatus::Unknown,
            successes: 0,
            failures: 0,
            critical_since: None,
        }
    }

    /// The check's status.
    pub fn status(&self) -> HealthStatus {
        self.status
    }

    /// Healthy (passing or warning) results in a row, up to the latest.
    pub fn consecutive_successes(&self) -> u32 {
        self.successes
    }

    /// Critical results in a row, up to the latest.
    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }

    /// How long the check has been critical at `now`, if it is.
    pub fn critical_for(&self, now: Instant) -> Option<Duration> {
        self.critical_since
            .map(|since| now.saturating_duration_since(since))
    }

    /// Takes in one raw result at `now`; returns whether the status changed.
    pub fn observe(&mut self, result: HealthStatus, thresholds: Thresholds, now: Instant) -> bool {
        let before = self.status;
        if result.is_healthy() {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
            let flips = match before {
                HealthStatus::Passing | HealthStatus::Warning | HealthStatus::Unknown => true,
                HealthStatus::Critical => self.successes >= thresholds.success_before_passing,
            };
            if flips {
                self.status = result;
            }
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
            let flips = match before {
                HealthStatus::Critical => false,
                HealthStatus::Unknown => true,
                HealthStatus::Passing | HealthStatus::Warning => {
                    self.failures >= thresholds.failures_before_critical
                }
            };
            if flips {
                self.status = HealthStatus::Critical;
            }
        }
        match (
            before == HealthStatus::Critical,
            self.status == HealthStatus::Critical,
        ) {
            (false, true) => self.critical_since = Some(now),
            (true, false) => self.critical_since = None,
            _ => {}
        }
        before != self.status
    }
}

/// How bad a status is, for [`aggregate`]: passing < warning < unknown <
/// critical.
pub fn severity(status: HealthStatus) -> u8 {
    match status {
        HealthStatus::Passing => 0,
        HealthStatus::Warning => 1,
        HealthStatus::Unknown => 2,
        HealthStatus::Critical => 3,
    }
}

/// The worst of `statuses`; [`HealthStatus::Passing`] when there are none.
pub fn aggregate(statuses: impl IntoIterator<Item = HealthStatus>) -> HealthStatus {
    statuses
        .into_iter()
        .max_by_key(|s| severity(*s))
        .unwrap_or(HealthStatus::Passing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use HealthStatus::{Critical, Passing, Unknown, Warning};

    fn run(results: &[HealthStatus], t: Thresholds) -> Vec<HealthStatus> {
        let now = Instant::now();
        let mut state = CheckState::new();
        results
            .iter()
            .map(|r| {
                state.observe(*r, t, now);
                state.status()
            })
            .collect()
    }

    fn th(s: u32, f: u32) -> Thresholds {
        Thresholds {
            success_before_passing: s,
            failures_before_critical: f,
        }
    }

    #[test]
    fn starts_unknown_and_first_result_counts_at_once() {
        assert_eq!(CheckState::new().status(), Unknown);
        assert_eq!(run(&[Passing], th(3, 3)), [Passing]);
        assert_eq!(run(&[Warning], th(3, 3)), [Warning]);
        assert_eq!(run(&[Critical], th(3, 3)), [Critical]);
        assert_eq!(run(&[Unknown], th(3, 3)), [Critical]);
    }

    #[test]
    fn thresholds_delay_flips() {
        let seq = [
            Passing, Critical, Critical, Passing, Critical, Critical, Critical,
        ];
        assert_eq!(
            run(&seq, th(2, 3)),
            [
                Passing, Passing, Passing, Passing, Passing, Passing, Critical
            ]
        );
        let seq = [Critical, Passing, Warning, Critical, Passing, Passing];
        assert_eq!(
            run(&seq, th(2, 1)),
            [Critical, Critical, Warning, Critical, Critical, Passing]
        );
    }

    #[test]
    fn passing_and_warning_swap_at_once() {
        assert_eq!(
            run(&[Passing, Warning, Passing, Warning], th(5, 5)),
            [Passing, Warning, Passing, Warning]
        );
    }

    #[test]
    fn critical_since_tracks_the_critical_stretch() {
        let t0 = Instant::now();
        let mut s = CheckState::new();
        assert!(s.observe(Critical, th(1, 1), t0));
        assert_eq!(
            s.critical_for(t0 + Duration::from_secs(5)),
            Some(Duration::from_secs(5))
        );
        assert!(!s.observe(Critical, th(1, 1), t0 + Duration::from_secs(1)));
        assert_eq!(
            s.critical_for(t0 + Duration::from_secs(5)),
            Some(Duration::from_secs(5))
        );
        assert!(s.observe(Passing, th(1, 1), t0 + Duration::from_secs(6)));
        assert_eq!(s.critical_for(t0 + Duration::from_secs(7)), None);
    }

    /// Every sequence of up to 7 results over every pair of thresholds up
    /// to 3, against the rules stated independently of the implementation.
    #[test]
    fn exhaustive_against_the_rules() {
        let alphabet = [Passing, Warning, Critical, Unknown];
        let mut checked = 0u32;
        for s in 1..=3u32 {
            for f in 1..=3u32 {
                for len in 1..=7u32 {
                    for code in 0..4u32.pow(len) {
                        let seq: Vec<HealthStatus> = (0..len)
                            .map(|i| alphabet[(code / 4u32.pow(i) % 4) as usize])
                            .collect();
                        check_rules(&seq, th(s, f));
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 9 * (4 + 16 + 64 + 256 + 1024 + 4096 + 16384));
    }

    fn check_rules(seq: &[HealthStatus], t: Thresholds) {
        let now = Instant::now();
        let mut state = CheckState::new();
        let mut prev = Unknown;
        for (i, &r) in seq.iter().enumerate() {
            let changed = state.observe(r, t, now);
            let got = state.status();
            assert_eq!(changed, got != prev, "{seq:?} {t:?} at {i}");
            // Counters are the trailing runs of healthy / unhealthy results.
            let trailing = |healthy: bool| {
                seq[..=i]
                    .iter()
                    .rev()
                    .take_while(|x| x.is_healthy() == healthy)
                    .count() as u32
            };
            assert_eq!(state.consecutive_successes(), trailing(true));
            assert_eq!(state.consecutive_failures(), trailing(false));
            assert_ne!(got, Unknown, "{seq:?}: a result always resolves unknown");
            let expected = if r.is_healthy() {
                let enough = trailing(true) >= t.success_before_passing;
                if prev.is_healthy() || prev == Unknown || enough {
                    r
                } else {
                    Critical
                }
            } else {
                let enough = trailing(false) >= t.failures_before_critical;
                if prev == Critical || prev == Unknown || enough {
                    Critical
                } else {
                    prev
                }
            };
            assert_eq!(got, expected, "{seq:?} {t:?} at {i}");
            assert_eq!(state.critical_for(now).is_some(), got == Critical);
            prev = got;
        }
    }

    #[test]
    fn aggregate_is_the_worst() {
        assert_eq!(aggregate([]), Passing);
        assert_eq!(aggregate([Passing, Warning]), Warning);
        assert_eq!(aggregate([Passing, Unknown, Warning]), Unknown);
        assert_eq!(aggregate([Unknown, Critical, Passing]), Critical);
        let all = [Passing, Warning, Unknown, Critical];
        for a in all {
            for b in all {
                let worst = aggregate([a, b]);
                assert!(severity(worst) >= severity(a) && severity(worst) >= severity(b));
                assert!(worst == a || worst == b);
            }
        }
    }
}
