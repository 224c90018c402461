//! What to check and how often: [`HealthCheckerConfig`], [`HealthConfig`]
//! and the [`CheckSpec`] builder.

use std::fmt;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};

use super::error::HealthError;
use super::state::Thresholds;

/// Settings of a [`HealthChecker`](super::HealthChecker) as a whole.
///
/// Build it with struct update syntax:
/// `HealthCheckerConfig { interval: Duration::from_secs(10), ..Default::default() }`.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheckerConfig {
    /// How often each check runs when neither the [`HealthConfig`] nor the
    /// [`CheckSpec`] says (default 10 s).
    pub interval: Duration,
    /// How long one check may take when its [`CheckSpec`] does not say
    /// (default 5 s). A check that takes longer is critical.
    pub timeout: Duration,
    /// How many scheduled checks may run at once, across every instance
    /// (default 128); due checks wait for a slot and never pile up as extra
    /// tasks. One-shot [`check_health`](super::HealthChecker::check_health)
    /// runs share a second budget of the same size.
    pub max_concurrency: usize,
    /// Spread of the schedule, as a fraction of the interval, `0.0..=1.0`
    /// (default 0.1). An instance's first check runs at a random point in the
    /// first `jitter × interval`, and each later one `interval ± jitter/2 ×
    /// interval` after the previous, so a thousand instances registered
    /// together do not fire together. Zero gives an exact schedule.
    pub jitter: f64,
    /// Seed of the jitter's random numbers, for reproducible schedules;
    /// `None` seeds from the operating system.
    pub seed: Option<u64>,
    /// How many bytes of a check's output (HTTP body, command output) a
    /// report keeps (default 4096, at least 64).
    pub max_output: usize,
}

impl Default for HealthCheckerConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            max_concurrency: 128,
            jitter: 0.1,
            seed: None,
            max_output: 4096,
        }
    }
}

impl HealthCheckerConfig {
    pub(crate) fn validate(&self) -> Result<(), HealthError> {
        let bad = |reason: String| Err(HealthError::InvalidConfig { reason });
        if self.interval.is_zero() {
            return bad("interval must be greater than zero".into());
        }
        if self.timeout.is_zero() {
            return bad("timeout must be greater than zero".into());
        }
        if self.max_concurrency == 0 {
            return bad("max_concurrency must be at least 1".into());
        }
        if self.max_output < 64 {
            return bad(format!(
                "max_output must be at least 64 bytes, got {}",
                self.max_output
            ));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return bad(format!(
                "jitter must be within 0.0..=1.0, got {}",
                self.jitter
            ));
        }
        Ok(())
    }
}

/// The checks of one instance; given to
/// [`start_health_checks`](super::HealthChecker::start_health_checks) and
/// [`check_health`](super::HealthChecker::check_health).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HealthConfig {
    /// How often each check runs; zero (the default) means the checker's
    /// [`HealthCheckerConfig::interval`]. A check's own
    /// [`CheckSpec::interval`] wins over both.
    pub interval: Duration,
    /// The checks. The instance's status is the worst of theirs; with none,
    /// it is passing.
    pub checks: Vec<CheckSpec>,
    /// Deregisters the instance (reason `critical`) once one of its checks
    /// has been critical this long, as Consul's
    /// `DeregisterCriticalServiceAfter`. `None` (the default) never does.
    pub deregister_critical_after: Option<Duration>,
}

/// The kind of a check; see [`CheckSpec::kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CheckKind {
    /// An HTTP request to the instance.
    Http,
    /// A TCP connection to the instance.
    Tcp,
    /// A local command.
    Exec,
    /// Refreshed from outside within a time to live.
    Ttl,
    /// `grpc.health.v1.Health/Check` (cargo feature `grpc`).
    Grpc,
}

impl CheckKind {
    /// `"http"`, `"tcp"`, `"exec"`, `"ttl"` or `"grpc"`.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Http => "http",
            CheckKind::Tcp => "tcp",
            CheckKind::Exec => "exec",
            CheckKind::Ttl => "ttl",
            CheckKind::Grpc => "grpc",
        }
    }
}

impl fmt::Display for CheckKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Probe {
    Http(HttpProbe),
    Tcp,
    Exec(Vec<String>),
    Ttl(Duration),
    #[cfg_attr(not(feature = "grpc"), allow(dead_code))]
    Grpc(String),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HttpProbe {
    pub(crate) path: String,
    pub(crate) method: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) expect_status: Option<u16>,
    pub(crate) expect_body: Option<String>,
}

/// One health check, built from its kind and refined with chained setters.
///
/// ```
/// use std::time::Duration;
/// use fluxor_registry::CheckSpec;
///
/// let check = CheckSpec::http("/health")
///     .name("http-health")
///     .timeout(Duration::from_secs(3))
///     .header("authorization", "Bearer token")
///     .failures_before_critical(3);
/// assert_eq!(check.check_name(), Some("http-health"));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct CheckSpec {
    pub(crate) name: Option<String>,
    pub(crate) probe: Probe,
    pub(crate) timeout: Option<Duration>,
    pub(crate) interval: Option<Duration>,
    pub(crate) thresholds: Thresholds,
    /// A setter used on a kind it does not apply to; reported by validation.
    misuse: Option<&'static str>,
}

impl CheckSpec {
    fn of(probe: Probe) -> Self {
        Self {
            name: None,
            probe,
            timeout: None,
            interval: None,
            thresholds: Thresholds::default(),
            misuse: None,
        }
    }

    /// `GET path` on the instance (`http://host:port{path}`, whatever its
    /// protocol; `https` instances are refused): 2xx is passing,
    /// 429 warning, anything else (or no answer in time) critical, as in
    /// Consul. Redirects are not followed.
    pub fn http(path: impl Into<String>) -> Self {
        Self::of(Probe::Http(HttpProbe {
            path: path.into(),
            method: "GET".to_owned(),
            headers: Vec::new(),
            expect_status: None,
            expect_body: None,
        }))
    }

    /// A TCP connection to the instance's `host:port` within the timeout.
    pub fn tcp() -> Self {
        Self::of(Probe::Tcp)
    }

    /// Runs `argv[0]` with the arguments `argv[1..]`, without a shell (so
    /// nothing in an instance's metadata can inject a command): exit 0 is
    /// passing, 1 warning, anything else critical. The command sees the
    /// instance in `FLUXOR_INSTANCE_ID`, `FLUXOR_SERVICE`, `FLUXOR_HOST`
    /// and `FLUXOR_PORT`. On timeout its whole process group is killed.
    pub fn exec<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::of(Probe::Exec(argv.into_iter().map(Into::into).collect()))
    }

    /// Critical unless refreshed within `ttl`, through
    /// [`pass_ttl`](super::HealthChecker::pass_ttl) (and `warn_ttl`,
    /// `fail_ttl`) or the instance's registry
    /// [`heartbeat`](crate::ServiceRegistry::heartbeat).
    pub fn ttl(ttl: Duration) -> Self {
        Self::of(Probe::Ttl(ttl))
    }

    /// `grpc.health.v1.Health/Check` for `service` (empty for the whole
    /// server): `SERVING` is passing, anything else critical.
    #[cfg(feature = "grpc")]
    #[cfg_attr(docsrs, doc(cfg(feature = "grpc")))]
    pub fn grpc(service: impl Into<String>) -> Self {
        Self::of(Probe::Grpc(service.into()))
    }

    /// Names the check (unique within an instance). Unnamed checks are
    /// named for their kind: `http`, then `http-2`, …
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// How long one run may take before it counts as critical.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// How often this check runs, over the [`HealthConfig::interval`].
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = Some(interval);
        self
    }

    /// Consecutive successes a critical check needs before it is passing
    /// again (Consul's `success_before_passing`, Envoy's healthy threshold);
    /// default 1. An instance's very first success counts at once.
    pub fn success_before_passing(mut self, n: u32) -> Self {
        self.thresholds.success_before_passing = n;
        self
    }

    /// Consecutive failures a passing check needs before it is critical
    /// (Consul's `failures_before_critical`, Envoy's unhealthy threshold);
    /// default 1.
    pub fn failures_before_critical(mut self, n: u32) -> Self {
        self.thresholds.failures_before_critical = n;
        self
    }

    fn http_mut(&mut self, setter: &'static str) -> Option<&mut HttpProbe> {
        match &mut self.probe {
            Probe::Http(http) => Some(http),
            _ => {
                self.misuse.get_or_insert(setter);
                None
            }
        }
    }

    /// The HTTP method (default `GET`). HTTP checks only.
    pub fn method(mut self, method: impl Into<String>) -> Self {
        if let Some(http) = self.http_mut("method") {
            http.method = method.into();
        }
        self
    }

    /// Adds a request header. HTTP checks only.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        if let Some(http) = self.http_mut("header") {
            http.headers.push((name.into(), value.into()));
        }
        self
    }

    /// Passing only on exactly this status (any other is critical), instead
    /// of Consul's 2xx / 429 rule. HTTP checks only.
    pub fn expect_status(mut self, status: u16) -> Self {
        if let Some(http) = self.http_mut("expect_status") {
            http.expect_status = Some(status);
        }
        self
    }

    /// Critical unless the body (its first 64 KiB) contains `text`. HTTP
    /// checks only.
    pub fn expect_body(mut self, text: impl Into<String>) -> Self {
        if let Some(http) = self.http_mut("expect_body") {
            http.expect_body = Some(text.into());
        }
        self
    }

    /// The name given with [`name`](Self::name), if any.
    pub fn check_name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The kind of check.
    pub fn kind(&self) -> CheckKind {
        match self.probe {
            Probe::Http(_) => CheckKind::Http,
            Probe::Tcp => CheckKind::Tcp,
            Probe::Exec(_) => CheckKind::Exec,
            Probe::Ttl(_) => CheckKind::Ttl,
            Probe::Grpc(_) => CheckKind::Grpc,
        }
    }

    /// Checks the spec; `check` is its resolved name, for the error.
    pub(crate) fn validate(&self, check: &str) -> Result<(), HealthError> {
        let bad = |reason: String| {
            Err(HealthError::InvalidCheck {
                check: check.to_owned(),
                reason,
            })
        };
        if let Some(setter) = self.misuse {
            return bad(format!(
                "`{setter}` applies to http checks, not {} checks",
                self.kind()
            ));
        }
        if check.is_empty() {
            return bad("the name is empty".into());
        }
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return bad("timeout must be greater than zero".into());
        }
        if self.interval.is_some_and(|t| t.is_zero()) {
            return bad("interval must be greater than zero".into());
        }
        if self.thresholds.success_before_passing == 0
            || self.thresholds.failures_before_critical == 0
        {
            return bad("thresholds must be at least 1".into());
        }
        match &self.probe {
            Probe::Http(http) => {
                if !http.path.starts_with('/') {
                    return bad(format!("path {:?} must start with '/'", http.path));
                }
                if http.path.parse::<http::uri::PathAndQuery>().is_err() {
                    return bad(format!("path {:?} is not a valid URI path", http.path));
                }
                if Method::from_bytes(http.method.as_bytes()).is_err() {
                    return bad(format!(
                        "method {:?} is not a valid HTTP method",
                        http.method
                    ));
                }
                for (name, value) in &http.headers {
                    if HeaderName::from_bytes(name.as_bytes()).is_err() {
                        return bad(format!("header name {name:?} is not valid"));
                    }
                    if HeaderValue::from_str(value).is_err() {
                        return bad(format!("the value of header {name:?} is not valid"));
                    }
                }
                if let Some(status) = http.expect_status
                    && !(100..=999).contains(&status)
                {
                    return bad(format!("expected status {status} is not an HTTP status"));
                }
            }
            Probe::Exec(argv) => match argv.first() {
                None => return bad("argv is empty".into()),
                Some(program) if program.is_empty() => return bad("the program is empty".into()),
                Some(_) if argv.iter().any(|a| a.contains('\0')) => {
                    return bad("an argument contains a NUL byte".into());
                }
                Some(_) => {}
            },
            Probe::Ttl(ttl) if ttl.is_zero() => return bad("ttl must be greater than zero".into()),
            Probe::Tcp | Probe::Ttl(_) | Probe::Grpc(_) => {}
        }
        Ok(())
    }
}
