//! Circuit breaker integration tests.
