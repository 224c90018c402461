//! The circuit breaker's errors.

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A [`CircuitBreakerConfig`](super::CircuitBreakerConfig) field out of range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: &'static str,
    reason: String,
}

impl ConfigError {
    pub(crate) fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }

    /// The field's name, e.g. `"reset_timeout"` or `"rate.window"`.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// What is wrong with it.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid circuit breaker config: `{}` {}",
            self.field, self.reason
        )
    }
}

impl Error for ConfigError {}

/// A call was rejected because its circuit is open (or half-open with every
/// trial call taken).
///
/// The tower face returns it boxed in a [`tower::BoxError`]; find it with
/// `error.downcast_ref::<CircuitOpenError>()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitOpenError {
    key: Arc<str>,
    retry_after: Option<Duration>,
}

impl CircuitOpenError {
    pub(crate) fn new(key: Arc<str>, retry_after: Option<Duration>) -> Self {
        Self { key, retry_after }
    }

    /// The circuit's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// How long until the circuit lets a trial call through; `None` when
    /// that is not a matter of time: it was opened by hand
    /// ([`CircuitBreaker::trip`](super::CircuitBreaker::trip)) or is
    /// half-open with every trial call taken.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for CircuitOpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "circuit `{}` is open", self.key)?;
        if let Some(after) = self.retry_after {
            write!(f, ", retry after {after:?}")?;
        }
        Ok(())
    }
}

impl Error for CircuitOpenError {}

/// Why [`CircuitBreaker::execute`](super::CircuitBreaker::execute) returned
/// no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CircuitError<E> {
    /// The circuit rejected the call; the operation was not run.
    Open {
        /// The circuit's key.
        key: Arc<str>,
        /// See [`CircuitOpenError::retry_after`].
        retry_after: Option<Duration>,
    },
    /// The operation ran and returned this error.
    Inner(E),
}

impl<E> CircuitError<E> {
    /// Whether the circuit rejected the call.
    pub fn is_open(&self) -> bool {
        matches!(self, CircuitError::Open { .. })
    }

    /// The operation's own error, if it ran and failed.
    pub fn into_inner(self) -> Option<E> {
        match self {
            CircuitError::Inner(e) => Some(e),
            CircuitError::Open { .. } => None,
        }
    }
}

impl<E> From<CircuitOpenError> for CircuitError<E> {
    fn from(e: CircuitOpenError) -> Self {
        CircuitError::Open {
            key: e.key,
            retry_after: e.retry_after,
        }
    }
}

impl<E: fmt::Display> fmt::Display for CircuitError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CircuitError::Open { key, retry_after } => {
                fmt::Display::fmt(&CircuitOpenError::new(key.clone(), *retry_after), f)
            }
            CircuitError::Inner(e) => write!(f, "call failed: {e}"),
        }
    }
}

impl<E: Error + 'static> Error for CircuitError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            CircuitError::Inner(e) => Some(e),
            CircuitError::Open { .. } => None,
        }
    }
}

/// A circuit breaker service was called without a successful `poll_ready`
/// first (a bug in the caller, reported instead of a panic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NotReadyError;

impl fmt::Display for NotReadyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("circuit breaker service called before poll_ready returned ready")
    }
}

impl Error for NotReadyError {}
