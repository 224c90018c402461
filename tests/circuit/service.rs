//! The tower face: readiness scripts on paused time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use fluxor_registry::circuit::{CircuitBreakerService, ErrorIsFailure, NotReadyError, WhenOpen};
use fluxor_registry::{
    CircuitBreaker, CircuitBreakerConfig, CircuitBreakerLayer, CircuitOpenError, CircuitState,
    EventHub,
};
use tokio::time::{Instant, advance, timeout};
use tower::{BoxError, Layer, Service, ServiceExt, service_fn};

const S: Duration = Duration::from_secs(1);

/// A service that fails while `failing` is set and counts its calls.
fn flaky(
    failing: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
) -> tower::util::ServiceFn<impl FnMut(()) -> std::future::Ready<Result<u32, &'static str>> + Clone>
{
    service_fn(move |()| {
        calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(if failing.load(Ordering::SeqCst) {
            Err("down")
        } else {
            Ok(1)
        })
    })
}

fn config(threshold: u32) -> CircuitBreakerConfig {
    CircuitBreakerConfig {
        failure_threshold: threshold,
        reset_timeout: 30 * S,
        ..Default::default()
    }
}

async fn call<S>(svc: &mut S) -> Result<u32, BoxError>
where
    S: Service<(), Response = u32, Error = BoxError>,
{
    svc.ready().await?.call(()).await
}

/// Whether the service becomes ready within a second (paused time: the
/// clock jumps to the next timer when idle).
async fn ready_within_a_second<S: Service<()>>(svc: &mut S) -> bool {
    timeout(S, svc.ready()).await.is_ok()
}

#[tokio::test(start_paused = true)]
async fn per_endpoint_an_open_circuit_is_not_ready_and_its_timer_wakes_it() {
    let (failing, calls) = (
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicUsize::new(0)),
    );
    let mut svc = CircuitBreakerLayer::try_new(config(2))
        .unwrap()
        .layer(flaky(failing.clone(), calls.clone()));
    for _ in 0..2 {
        assert_eq!(call(&mut svc).await.unwrap_err().to_string(), "down");
    }
    assert_eq!(svc.state(), CircuitState::Open);
    assert!(!ready_within_a_second(&mut svc).await, "open: not ready");
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // Waiting for readiness, and nothing else, is woken by the circuit's own
    // timer when it turns half-open.
    failing.store(false, Ordering::SeqCst);
    let waited_from = Instant::now();
    svc.ready().await.unwrap();
    assert_eq!(Instant::now() - waited_from, 29 * S);
    assert_eq!(svc.state(), CircuitState::HalfOpen);
    assert_eq!(svc.call(()).await.unwrap(), 1);
    assert_eq!(svc.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn alone_an_open_circuit_fails_fast_with_the_typed_error() {
    let (failing, calls) = (
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicUsize::new(0)),
    );
    let mut svc = CircuitBreakerLayer::try_fail_fast(config(1))
        .unwrap()
        .layer(flaky(failing.clone(), calls.clone()));
    call(&mut svc).await.unwrap_err();
    advance(10 * S).await;
    let err = call(&mut svc).await.unwrap_err();
    let open = err.downcast_ref::<CircuitOpenError>().unwrap();
    assert_eq!(open.retry_after(), Some(20 * S));
    assert_eq!(open.key(), svc.key());
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "rejected calls never reach it"
    );
    advance(20 * S).await;
    failing.store(false, Ordering::SeqCst);
    assert_eq!(call(&mut svc).await.unwrap(), 1);
    assert_eq!(svc.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_reserved_trial_permit_blocks_others_and_dropping_it_wakes_them() {
    let breaker = CircuitBreaker::try_new(config(1)).unwrap();
    let layer = breaker.layer("shared").when_open(WhenOpen::NotReady);
    let calls = Arc::new(AtomicUsize::new(0));
    let mut a = layer.layer(flaky(Arc::new(AtomicBool::new(false)), calls.clone()));
    let mut b = layer.layer(flaky(Arc::new(AtomicBool::new(false)), calls.clone()));
    breaker
        .execute("shared", || async { Err::<(), _>(()) })
        .await
        .unwrap_err();
    assert_eq!(breaker.get_state("shared"), CircuitState::Open);
    advance(30 * S).await;

    // `a` reserves the only trial permit in poll_ready…
    a.ready().await.unwrap();
    // …so `b` waits, with no timer to wake it: only the circuit can.
    let waiting = tokio::spawn(async move {
        b.ready().await.unwrap();
        b
    });
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished());
    // Dropping `a` with its unspent reservation frees the permit uncounted.
    drop(a);
    let mut b = timeout(S, waiting).await.expect("woken").unwrap();
    assert_eq!(breaker.get_state("shared"), CircuitState::HalfOpen);
    b.call(()).await.unwrap();
    assert_eq!(
        breaker.get_state("shared"),
        CircuitState::Closed,
        "one state, both faces"
    );
}

#[tokio::test(start_paused = true)]
async fn a_dropped_response_future_frees_its_trial_permit() {
    let breaker = CircuitBreaker::try_new(config(1)).unwrap();
    let mut svc = breaker
        .layer("k")
        .layer(service_fn(|hang: bool| async move {
            if hang {
                std::future::pending::<()>().await;
            }
            Ok::<_, &str>(1)
        }));
    breaker
        .execute("k", || async { Err::<(), _>(()) })
        .await
        .unwrap_err();
    advance(30 * S).await;
    let hung = svc.ready().await.unwrap().call(true);
    assert!(timeout(S, hung).await.is_err());
    assert_eq!(breaker.get_state("k"), CircuitState::HalfOpen);
    assert_eq!(svc.ready().await.unwrap().call(false).await.unwrap(), 1);
    assert_eq!(breaker.get_state("k"), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn at_most_the_ejection_share_of_endpoints_opens() {
    let layer = CircuitBreakerLayer::try_new(CircuitBreakerConfig {
        max_ejection_percent: 50,
        ..config(1)
    })
    .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let failing = Arc::new(AtomicBool::new(true));
    let mut endpoints: Vec<_> = (0..4)
        .map(|_| layer.layer(flaky(failing.clone(), calls.clone())))
        .collect();
    for svc in &mut endpoints {
        call(svc).await.unwrap_err();
    }
    let open = endpoints
        .iter()
        .filter(|s| s.state() == CircuitState::Open)
        .count();
    assert_eq!(open, 2, "half of four");
    assert_eq!(layer.ejected(), (2, 2));
    // An endpoint that could not be ejected keeps serving (and failing).
    let still = endpoints
        .iter_mut()
        .find(|s| s.state() == CircuitState::Closed)
        .unwrap();
    call(still).await.unwrap_err();
    assert_eq!(still.state(), CircuitState::Closed);
    // When an open endpoint goes away, its slot is free again.
    let gone = endpoints
        .iter()
        .position(|s| s.state() == CircuitState::Open)
        .unwrap();
    endpoints.remove(gone);
    assert_eq!(layer.ejected(), (1, 1));
    let (open, mut closed): (Vec<_>, Vec<_>) = endpoints
        .into_iter()
        .partition(|s| s.state() == CircuitState::Open);
    assert_eq!((open.len(), closed.len()), (1, 2));
    for svc in &mut closed {
        call(svc).await.unwrap_err();
    }
    assert_eq!(
        closed
            .iter()
            .filter(|s| s.state() == CircuitState::Open)
            .count(),
        0,
        "3 endpoints at 50 %: one may be open, and one is"
    );
    drop(open);
    // With it gone, 2 endpoints at 50 %: one may open now.
    call(&mut closed[0]).await.unwrap_err();
    assert_eq!(closed[0].state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn transitions_are_published_on_the_hub() {
    let hub = EventHub::default();
    let mut events = hub.subscribe();
    let mut svc = CircuitBreakerLayer::try_new(config(1))
        .unwrap()
        .key_prefix("inventory")
        .with_events(hub)
        .layer(flaky(
            Arc::new(AtomicBool::new(true)),
            Arc::new(AtomicUsize::new(0)),
        ));
    call(&mut svc).await.unwrap_err();
    let event = events.recv().await.unwrap();
    assert_eq!(event.name(), "circuit-breaker-open");
    assert_eq!(event.key(), svc.key());
    assert!(svc.key().starts_with("inventory-"));
    svc.trip();
    svc.reset();
    assert_eq!(events.recv().await.unwrap().name(), "circuit-breaker-open");
    assert_eq!(
        events.recv().await.unwrap().name(),
        "circuit-breaker-closed"
    );
}

#[tokio::test]
async fn an_inner_poll_ready_error_releases_the_reservation() {
    #[derive(Debug)]
    struct Broken;
    impl Service<()> for Broken {
        type Response = ();
        type Error = &'static str;
        type Future = std::future::Ready<Result<(), &'static str>>;
        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Err("broken"))
        }
        fn call(&mut self, _: ()) -> Self::Future {
            std::future::ready(Ok(()))
        }
    }
    let breaker = CircuitBreaker::try_new(config(1)).unwrap();
    breaker.trip("k");
    breaker.reset("k");
    let mut svc: CircuitBreakerService<Broken, ErrorIsFailure> = breaker.layer("k").layer(Broken);
    assert_eq!(svc.ready().await.unwrap_err().to_string(), "broken");
    // Calling without readiness is a typed error, not a panic.
    let err = svc.call(()).await.unwrap_err();
    assert!(err.is::<NotReadyError>());
    assert_eq!(breaker.get_state("k"), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_reset_by_hand_wakes_a_not_ready_endpoint_before_its_timer() {
    let (failing, calls) = (
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicUsize::new(0)),
    );
    let mut svc = CircuitBreakerLayer::try_new(config(1))
        .unwrap()
        .layer(flaky(failing.clone(), calls.clone()));
    call(&mut svc).await.unwrap_err();
    assert_eq!(svc.state(), CircuitState::Open);
    let handle = svc.clone(); // shares the circuit
    failing.store(false, Ordering::SeqCst);
    let started = Instant::now();
    let waiting = tokio::spawn(async move {
        svc.ready().await.unwrap();
        svc
    });
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished());
    handle.reset();
    let mut svc = waiting.await.unwrap();
    assert_eq!(
        Instant::now(),
        started,
        "woken by the reset, not the 30 s timer"
    );
    assert_eq!(svc.call(()).await.unwrap(), 1);

    // Tripped by hand: not ready, with no timer at all, until reset.
    handle.trip();
    assert!(!ready_within_a_second(&mut svc).await);
    advance(Duration::from_secs(3600)).await;
    assert!(!ready_within_a_second(&mut svc).await);
    handle.reset();
    assert!(ready_within_a_second(&mut svc).await);
}

/// The tower face under contention: 1,000 clones of a service sharing one
/// half-open circuit race through `poll_ready`; exactly
/// `half_open_max_calls` reserve a trial, the rest fail fast. Real
/// parallelism needs the multi-threaded runtime, whose clock cannot be
/// paused, so the 1 ms reset timeout is waited out with `sleep_until` the
/// deadline the circuit reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[allow(clippy::async_yields_async)] // each task hands back its call's future on purpose
async fn thousand_concurrent_services_reserve_exactly_n_trial_permits() {
    const CALLERS: usize = 1000;
    const PERMITS: u32 = 4;
    let breaker = CircuitBreaker::try_new(CircuitBreakerConfig {
        failure_threshold: 1,
        reset_timeout: Duration::from_millis(1),
        half_open_max_calls: PERMITS,
        success_threshold: PERMITS,
        ..Default::default()
    })
    .unwrap();
    breaker
        .execute("hot", || async { Err::<(), _>(()) })
        .await
        .unwrap_err();
    tokio::time::sleep_until(Instant::now() + Duration::from_millis(1)).await;

    let reached = Arc::new(AtomicUsize::new(0));
    let hold = Arc::new(tokio::sync::Semaphore::new(0));
    let inner = {
        let (reached, hold) = (reached.clone(), hold.clone());
        service_fn(move |()| {
            let (reached, hold) = (reached.clone(), hold.clone());
            async move {
                reached.fetch_add(1, Ordering::SeqCst);
                let _ = hold.acquire().await;
                Ok::<_, std::io::Error>(1u32)
            }
        })
    };
    let svc = breaker.layer("hot").layer(inner);
    let start = Arc::new(tokio::sync::Barrier::new(CALLERS));
    let tasks: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (mut svc, start) = (svc.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                // Reserve (or be refused) in poll_ready; the call holds its
                // trial until released below.
                let ready = svc.ready().await.unwrap();
                ready.call(())
            })
        })
        .collect();
    let mut futures = vec![];
    for t in tasks {
        futures.push(t.await.unwrap());
    }
    // Every poll_ready has happened; now let the trials finish.
    hold.add_permits(CALLERS);
    let mut rejected = 0;
    for f in futures {
        if let Err(e) = f.await {
            assert!(e.is::<CircuitOpenError>(), "{e}");
            rejected += 1;
        }
    }
    assert_eq!(reached.load(Ordering::SeqCst), PERMITS as usize);
    assert_eq!(rejected, CALLERS - PERMITS as usize);
    assert_eq!(breaker.get_state("hot"), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_reservation_made_before_the_circuit_opened_is_dropped_on_the_next_poll() {
    let breaker = CircuitBreaker::try_new(config(1)).unwrap();
    let layer = breaker.layer("k").when_open(WhenOpen::NotReady);
    let calls = Arc::new(AtomicUsize::new(0));
    let mut svc = layer.layer(flaky(Arc::new(AtomicBool::new(false)), calls.clone()));
    // Ready (a closed-state call reserved)…
    svc.ready().await.unwrap();
    // …then another caller's failure opens the circuit.
    breaker
        .execute("k", || async { Err::<(), _>(()) })
        .await
        .unwrap_err();
    // Checked again before the call (as p2c does), it is no longer ready.
    assert!(!ready_within_a_second(&mut svc).await);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn keyed_by_discovery_circuits_are_named_by_instance_id() {
    use fluxor_registry::{Query, ServiceDefinition, ServiceInstance, ServiceRegistry};
    use tower::balance::p2c::Balance;
    use tower::load::Constant;
    use tower::{ServiceBuilder, layer::layer_fn};

    let registry = ServiceRegistry::builder().build().await.unwrap();
    let good = registry
        .register(ServiceDefinition::new("web", "127.0.0.1", 8001))
        .await
        .unwrap();
    let bad = registry
        .register(ServiceDefinition::new("web", "127.0.0.1", 8002))
        .await
        .unwrap();
    let mut events = registry.subscribe();
    let endpoints = registry
        .discover(Query::name("web"))
        .endpoints(|i: &ServiceInstance| {
            let port = i.port();
            service_fn(move |()| async move { if port == 8002 { Err("down") } else { Ok(port) } })
        });
    let breaker = CircuitBreakerLayer::try_new(config(2))
        .unwrap()
        .with_events(registry.events());
    let endpoints = ServiceBuilder::new()
        .layer(fluxor_registry::EndpointLayer::new(layer_fn(|s| {
            Constant::new(s, 1)
        })))
        .layer(breaker.keyed_by_discovery())
        .service(endpoints);
    let mut balance = Balance::new(endpoints);
    let mut failed = 0;
    for _ in 0..50 {
        if balance.ready().await.unwrap().call(()).await.is_err() {
            failed += 1;
        }
    }
    assert_eq!(failed, 2, "only the threshold's failures reach the caller");
    let event = loop {
        let event = events.recv().await.unwrap();
        if event.name() == "circuit-breaker-open" {
            break event;
        }
    };
    assert_eq!(event.key(), bad.id().as_str());
    assert_ne!(event.key(), good.id().as_str());
}
