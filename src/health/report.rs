use std::time::{Duration, SystemTime};

use super::config::CheckKind;
use crate::instance::{HealthStatus, InstanceId};

/// What one run of one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// The raw result of this run (before thresholds).
    pub status: HealthStatus,
    /// What the check saw: the HTTP status line and body, the command's
    /// output, the TTL note… truncated to
    /// [`max_output`](super::HealthCheckerConfig::max_output) bytes.
    pub output: String,
    /// When the run finished, on the wall clock.
    pub at: SystemTime,
    /// How long it took.
    pub took: Duration,
}

/// One check of an instance: its status after thresholds and its last run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// The check's name.
    pub name: String,
    /// Its kind.
    pub kind: CheckKind,
    /// Its status, after the thresholds.
    pub status: HealthStatus,
    /// The latest run, if any has finished.
    pub last: Option<CheckResult>,
    /// Healthy results in a row, up to the latest.
    pub consecutive_successes: u32,
    /// Critical results in a row, up to the latest.
    pub consecutive_failures: u32,
}

/// The health of one instance: the worst of its checks, and each check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    /// The instance.
    pub instance: InstanceId,
    /// The aggregate: the worst of the checks' statuses, passing with none.
    pub status: HealthStatus,
    /// Each check, in the order they were configured.
    pub checks: Vec<CheckReport>,
}

impl HealthReport {
    /// The check named `name`.
    pub fn check(&self, name: &str) -> Option<&CheckReport> {
        self.checks.iter().find(|c| c.name == name)
    }
}
