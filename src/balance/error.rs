use std::fmt;
use std::time::Duration;

/// No endpoint became ready within the configured wait
/// ([`LoadBalanceLayer::no_endpoints_timeout`](crate::LoadBalanceLayer::no_endpoints_timeout)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoEndpoints {
    pub(crate) known: usize,
    pub(crate) waited: Duration,
}

impl NoEndpoints {
    /// How many endpoints the balancer knew of (none of them ready).
    pub fn known(&self) -> usize {
        self.known
    }

    /// How long it waited.
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

impl fmt::Display for NoEndpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no ready endpoint after {:?} ({} known)",
            self.waited, self.known
        )
    }
}

impl std::error::Error for NoEndpoints {}

/// The balancer was called without a successful `poll_ready` first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NotReady;

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("load balancer called before poll_ready returned ready")
    }
}

impl std::error::Error for NotReady {}
