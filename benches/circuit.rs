//! What does a circuit breaker add to each call while its circuit is closed
//! (the state it spends nearly all its life in)?
//!
//! Measured side by side in one run, each a full `ready()` + `call()` +
//! response on a service that answers at once (futures polled to completion
//! with `now_or_never`, inside a tokio runtime context, so the figures are
//! the middleware's own cost):
//!
//! * `closed/bare`: the service alone;
//! * `closed/fluxor/consecutive`: behind our `CircuitBreakerLayer`, opening
//!   after 5 consecutive failures (the original contract);
//! * `closed/fluxor/rate_window_100`: ours with a 100-call count window and
//!   a 50 % failure-rate rule;
//! * `closed/tower_resilience/consecutive`, `closed/tower_resilience/rate_window_100`:
//!   `tower-resilience`'s circuit breaker configured the same two ways;
//! * `execute/bare` and `execute/fluxor`: the imperative face,
//!   `CircuitBreaker::execute` against awaiting the operation directly.
//!
//! Goal: less overhead than tower-resilience's.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use fluxor_registry::circuit::{RateRule, SlidingWindow};
use fluxor_registry::{CircuitBreaker, CircuitBreakerConfig, CircuitBreakerLayer};
use futures_util::FutureExt;
use tower::util::ServiceFn;
use tower::{Layer, Service, ServiceExt, service_fn};

type Echo = ServiceFn<fn(u64) -> Ready<Result<u64, Infallible>>>;

fn echo() -> Echo {
    service_fn(|x: u64| ready(Ok(x)))
}

fn config(window: bool) -> CircuitBreakerConfig {
    CircuitBreakerConfig {
        failure_threshold: if window { 0 } else { 5 },
        reset_timeout: Duration::from_secs(30),
        rate: window.then(|| RateRule::failure_rate(SlidingWindow::Count(100), 100, 0.5)),
        ..Default::default()
    }
}

/// One call through `svc`, which must complete without waiting.
fn one<S>(svc: &mut S, x: u64) -> u64
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    let ready = svc.ready().now_or_never().expect("ready at once");
    let response = ready
        .expect("ready")
        .call(x)
        .now_or_never()
        .expect("answers at once");
    response.expect("ok")
}

fn closed(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let mut group = c.benchmark_group("closed");

    let mut bare = echo();
    group.bench_function("bare", |b| b.iter(|| one(&mut bare, black_box(1))));

    for (name, window) in [("consecutive", false), ("rate_window_100", true)] {
        let mut ours = CircuitBreakerLayer::try_new(config(window))
            .expect("valid config")
            .layer(echo());
        group.bench_function(format!("fluxor/{name}"), |b| {
            b.iter(|| one(&mut ours, black_box(1)))
        });

        let builder = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
            .wait_duration_in_open(Duration::from_secs(30));
        let builder = if window {
            builder
                .failure_rate_threshold(0.5)
                .sliding_window_size(100)
                .minimum_number_of_calls(100)
        } else {
            builder.consecutive_failures(5)
        };
        let mut theirs = builder.build().expect("valid config").layer(echo());
        group.bench_function(format!("tower_resilience/{name}"), |b| {
            b.iter(|| one(&mut theirs, black_box(1)))
        });
    }
    group.finish();
}

fn execute(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let mut group = c.benchmark_group("execute");
    group.bench_function("bare", |b| {
        b.iter(|| {
            let op = || async { Ok::<_, Infallible>(black_box(1u64)) };
            op().now_or_never().expect("at once")
        })
    });
    let breaker = CircuitBreaker::try_new(config(false)).expect("valid config");
    group.bench_function("fluxor", |b| {
        b.iter(|| {
            breaker
                .execute(black_box("inventory"), || async {
                    Ok::<_, Infallible>(black_box(1u64))
                })
                .now_or_never()
                .expect("at once")
        })
    });
    group.finish();
}

criterion_group!(benches, closed, execute);
criterion_main!(benches);
