//! The balancer's hot path allocates nothing: ready + call + response, for
//! every strategy, counted by dhat's global allocator.
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use fluxor_registry::balance::RequestKeys;
use fluxor_registry::{LoadBalanceLayer, Strategy};
use futures_util::future::ready;
use futures_util::stream::{self, StreamExt};
use tower::discover::Change;
use tower::{Layer, Service, service_fn};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn allocations() -> u64 {
    dhat::HeapStats::get().total_blocks
}

fn run<S>(mut svc: S, requests: u64) -> u64
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    let mut once = |svc: &mut S, req: u64| {
        assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
        let fut = pin!(svc.call(req));
        assert!(matches!(fut.poll(&mut cx), Poll::Ready(Ok(_))));
    };
    // Warm up: take in the endpoints, grow the internal vectors.
    for req in 0..1_000 {
        once(&mut svc, req);
    }
    let before = allocations();
    for req in 0..requests {
        once(&mut svc, req % 100);
    }
    allocations() - before
}

#[test]
fn ready_and_call_allocate_nothing() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    for strategy in Strategy::ALL {
        for n in [3usize, 1_000] {
            let changes: Vec<Result<Change<usize, _>, Infallible>> = (0..n)
                .map(|i| {
                    Ok(Change::Insert(
                        i,
                        service_fn(|req: u64| ready(Ok::<_, Infallible>(req))),
                    ))
                })
                .collect();
            let discover = stream::iter(changes).chain(stream::pending());
            let layer = LoadBalanceLayer::new(strategy)
                .seed(1)
                .context(|req: &u64| RequestKeys::new().hash_key(req));
            let allocations = run(layer.layer(discover), 10_000);
            assert_eq!(
                allocations, 0,
                "{strategy} with {n} endpoints allocated {allocations} times in 10,000 requests"
            );
        }
    }
    // The control: binding ever-new sticky sessions does allocate, so the
    // counter does see the balancer's allocations.
    let changes: Vec<Result<Change<usize, _>, Infallible>> = (0..3)
        .map(|i| {
            Ok(Change::Insert(
                i,
                service_fn(|req: u64| ready(Ok::<_, Infallible>(req))),
            ))
        })
        .collect();
    let discover = stream::iter(changes).chain(stream::pending());
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let layer = LoadBalanceLayer::new(Strategy::RoundRobin)
        .sticky(fluxor_registry::balance::StickyConfig::default())
        .context(move |_: &u64| {
            RequestKeys::new().session(&counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
        });
    assert!(run(layer.layer(discover), 10_000) > 0);
}
