//! What does choosing one of N endpoints cost?
//!
//! One `poll_ready` + `call` + completion of the response, per strategy, for
//! N = 3 … 10,000 ready endpoints, side by side with tower's own
//! `p2c::Balance` (over `PendingRequests`, and over `PeakEwma` to compare
//! like for like with our p2c) and a bare service in the same run. Endpoints answer at once, so what is measured is the balancer.

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use fluxor_registry::balance::{RequestKeys, StickyConfig};
use fluxor_registry::{LoadBalanceLayer, Strategy};
use futures_util::future::{Ready, ready};
use futures_util::stream::{self, StreamExt};
use std::time::Duration;
use tower::discover::Change;

use tower::load::{CompleteOnResponse, PeakEwma, PendingRequests};
use tower::{Layer, Service, service_fn};

const SIZES: [usize; 5] = [3, 10, 100, 1_000, 10_000];

fn endpoint()
-> impl Service<u64, Response = u64, Error = Infallible, Future = Ready<Result<u64, Infallible>>> {
    service_fn(|req: u64| ready(Ok(req)))
}

fn discover<S>(
    n: usize,
    make: impl Fn() -> S,
) -> impl tower::discover::Discover<Key = usize, Service = S, Error = Infallible> + Unpin {
    let changes: Vec<Result<Change<usize, S>, Infallible>> =
        (0..n).map(|i| Ok(Change::Insert(i, make()))).collect();
    stream::iter(changes).chain(stream::pending())
}

/// One ready + call + completed response.
fn once<S>(svc: &mut S, cx: &mut Context<'_>, req: u64)
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    match svc.poll_ready(cx) {
        Poll::Ready(Ok(())) => {}
        other => panic!("not ready: {other:?}"),
    }
    let fut = pin!(svc.call(req));
    match fut.poll(cx) {
        Poll::Ready(Ok(v)) => {
            black_box(v);
        }
        _ => panic!("endpoint did not answer at once"),
    }
}

fn bench_service<S>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    n: usize,
    mut svc: S,
) where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    let waker = Waker::noop();
    let mut cx = Context::from_waker(waker);
    once(&mut svc, &mut cx, 0); // take in the endpoints
    let mut req = 0u64;
    group.bench_function(BenchmarkId::new(name, n), |b| {
        b.iter(|| {
            req = req.wrapping_add(1);
            once(&mut svc, &mut cx, req % 1_000);
        })
    });
}

fn select(c: &mut Criterion) {
    let _rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = _rt.enter();
    let mut group = c.benchmark_group("select");
    group.warm_up_time(std::time::Duration::from_millis(500));
    group.measurement_time(std::time::Duration::from_secs(1));
    for n in SIZES {
        bench_service(&mut group, "bare", n, endpoint());
        let tower_p2c = tower::balance::p2c::Balance::new(discover(n, || {
            PendingRequests::new(endpoint(), CompleteOnResponse::default())
        }));
        bench_service::<tower::balance::p2c::Balance<_, u64>>(
            &mut group,
            "tower-p2c",
            n,
            tower_p2c,
        );
        // Like for like with our p2c: tower's p2c over peak-EWMA latency.
        let tower_ewma = tower::balance::p2c::Balance::new(discover(n, || {
            PeakEwma::new(
                endpoint(),
                Duration::from_millis(30),
                10e9,
                CompleteOnResponse::default(),
            )
        }));
        bench_service::<tower::balance::p2c::Balance<_, u64>>(
            &mut group,
            "tower-p2c-peak-ewma",
            n,
            tower_ewma,
        );
        for strategy in Strategy::ALL {
            let layer = LoadBalanceLayer::new(strategy).seed(1);
            match strategy {
                Strategy::IpHash => {
                    let layer = layer.context(|req: &u64| RequestKeys::new().hash_key(req));
                    bench_service(
                        &mut group,
                        strategy.as_str(),
                        n,
                        layer.layer(discover(n, endpoint)),
                    );
                }
                _ => bench_service(
                    &mut group,
                    strategy.as_str(),
                    n,
                    layer.layer(discover(n, endpoint)),
                ),
            }
        }
        let sticky = LoadBalanceLayer::new(Strategy::RoundRobin)
            .sticky(StickyConfig::default())
            .context(|req: &u64| RequestKeys::new().session(req));
        bench_service(
            &mut group,
            "round-robin+sticky",
            n,
            sticky.layer(discover(n, endpoint)),
        );
    }
    group.finish();
}

criterion_group!(benches, select);
criterion_main!(benches);
