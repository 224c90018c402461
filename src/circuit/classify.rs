//! What counts as a failure: [`Classify`] policies.

use std::time::Duration;

/// How one call counts toward its circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A success: resets the run of failures; in half-open, counts toward
    /// closing.
    Success,
    /// A failure: counts toward opening; in half-open, reopens.
    Failure,
    /// Not counted at all (e.g. a 404, or a call the caller gave up on); a
    /// half-open trial permit is given back.
    Ignore,
}

/// Decides whether a finished call was a failure.
///
/// Implemented by [`ErrorIsFailure`] (the default), [`HttpClassifier`] and
/// any closure `Fn(&Result<T, E>, Duration) -> Outcome`, which also sees how
/// long the call took:
///
/// ```
/// use std::time::Duration;
/// use fluxor_registry::circuit::{Classify, Outcome};
///
/// // Count 429 as a failure, ignore 404, and fail anything slower than 2 s.
/// let classify = |result: &Result<http::Response<()>, std::io::Error>, elapsed: Duration| {
///     match result {
///         Err(_) => Outcome::Failure,
///         Ok(_) if elapsed > Duration::from_secs(2) => Outcome::Failure,
///         Ok(r) if r.status() == 404 => Outcome::Ignore,
///         Ok(r) if r.status() == 429 || r.status().is_server_error() => Outcome::Failure,
///         Ok(_) => Outcome::Success,
///     }
/// };
/// let mut not_found = http::Response::new(());
/// *not_found.status_mut() = http::StatusCode::NOT_FOUND;
/// assert_eq!(classify.classify(&Ok(not_found), Duration::ZERO), Outcome::Ignore);
/// ```
pub trait Classify<T, E> {
    /// The outcome of a call that returned `result` after `elapsed`.
    fn classify(&self, result: &Result<T, E>, elapsed: Duration) -> Outcome;

    /// Whether [`classify`](Self::classify) looks at `elapsed`; when it does
    /// not (and no slow-call rule is set), calls are not timed, which saves
    /// two clock reads per call.
    fn uses_elapsed(&self) -> bool {
        true
    }
}

/// The default policy: an `Err` is a failure, any `Ok` a success.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorIsFailure;

impl<T, E> Classify<T, E> for ErrorIsFailure {
    fn classify(&self, result: &Result<T, E>, _: Duration) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }

    fn uses_elapsed(&self) -> bool {
        false
    }
}

/// The HTTP policy: an `Err` or a `5xx` response is a failure.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpClassifier;

impl<B, E> Classify<http::Response<B>, E> for HttpClassifier {
    fn classify(&self, result: &Result<http::Response<B>, E>, _: Duration) -> Outcome {
        match result {
            Ok(r) if !r.status().is_server_error() => Outcome::Success,
            _ => Outcome::Failure,
        }
    }

    fn uses_elapsed(&self) -> bool {
        false
    }
}

impl<T, E, F> Classify<T, E> for F
where
    F: Fn(&Result<T, E>, Duration) -> Outcome,
{
    fn classify(&self, result: &Result<T, E>, elapsed: Duration) -> Outcome {
        self(result, elapsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16) -> Result<http::Response<()>, ()> {
        Ok(http::Response::builder().status(status).body(()).unwrap())
    }

    #[test]
    fn defaults() {
        assert_eq!(
            ErrorIsFailure.classify(&Ok::<_, ()>(1), Duration::ZERO),
            Outcome::Success
        );
        assert_eq!(
            ErrorIsFailure.classify(&Err::<(), _>(1), Duration::ZERO),
            Outcome::Failure
        );
        assert_eq!(
            HttpClassifier.classify(&response(200), Duration::ZERO),
            Outcome::Success
        );
        assert_eq!(
            HttpClassifier.classify(&response(404), Duration::ZERO),
            Outcome::Success
        );
        assert_eq!(
            HttpClassifier.classify(&response(429), Duration::ZERO),
            Outcome::Success
        );
        assert_eq!(
            HttpClassifier.classify(&response(500), Duration::ZERO),
            Outcome::Failure
        );
        assert_eq!(
            HttpClassifier.classify(&response(503), Duration::ZERO),
            Outcome::Failure
        );
        assert_eq!(
            HttpClassifier.classify(&Err::<http::Response<()>, _>(()), Duration::ZERO),
            Outcome::Failure
        );
        assert!(!Classify::<http::Response<()>, ()>::uses_elapsed(
            &HttpClassifier
        ));
    }
}
