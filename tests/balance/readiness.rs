//! tower readiness scripts with tower-test mocks: pending endpoints are
//! skipped, wake-ups are registered, an empty set is pending until an insert
//! wakes it, and an endpoint that errors is retried, not lost.

use std::time::Duration;

use fluxor_registry::balance::NoEndpoints;
use fluxor_registry::{LoadBalanceLayer, Strategy};
use tokio_test::{assert_pending, assert_ready_ok, task};
use tower::Layer;
use tower::discover::Change;
use tower_test::mock;
use tower_test::mock::Spawn;

use crate::{ALL, feed, id};

#[tokio::test]
async fn pending_endpoints_are_skipped_for_every_strategy() {
    for strategy in ALL {
        let (tx, discover) = feed();
        let (a, mut ha) = mock::pair::<&'static str, &'static str>();
        let (b, mut hb) = mock::pair::<&'static str, &'static str>();
        ha.allow(0); // a is not ready
        hb.allow(100);
        tx.send(Ok(Change::Insert(id(0), a))).unwrap();
        tx.send(Ok(Change::Insert(id(1), b))).unwrap();
        let mut svc = Spawn::new(LoadBalanceLayer::new(strategy).layer(discover));
        for _ in 0..20 {
            assert_ready_ok!(svc.poll_ready());
            let fut = svc.call("hi");
            let (req, send) = hb.next_request().await.unwrap();
            assert_eq!(req, "hi", "{strategy}");
            send.send_response("ok");
            assert_eq!(fut.await.unwrap(), "ok");
        }
        let mut a_requests = task::spawn(ha.next_request());
        assert_pending!(
            a_requests.poll(),
            "{strategy}: the pending endpoint got a request"
        );
        drop(tx);
    }
}

#[tokio::test]
async fn a_pending_endpoint_wakes_the_balancer_when_it_becomes_ready() {
    let (tx, discover) = feed();
    let (a, mut ha) = mock::pair::<&'static str, &'static str>();
    ha.allow(0);
    tx.send(Ok(Change::Insert(id(0), a))).unwrap();
    let mut svc = Spawn::new(LoadBalanceLayer::new(Strategy::RoundRobin).layer(discover));
    assert_pending!(svc.poll_ready());
    assert!(!svc.is_woken());
    ha.allow(1);
    assert!(
        svc.is_woken(),
        "the endpoint's readiness must wake the balancer"
    );
    assert_ready_ok!(svc.poll_ready());
    let fut = svc.call("x");
    let (_, send) = ha.next_request().await.unwrap();
    send.send_response("y");
    assert_eq!(fut.await.unwrap(), "y");
    drop(tx);
}

#[tokio::test]
async fn an_empty_set_is_pending_and_an_insert_wakes_it() {
    let (tx, discover) = feed::<mock::Mock<&'static str, &'static str>>();
    let mut svc = Spawn::new(LoadBalanceLayer::new(Strategy::LeastConnections).layer(discover));
    assert_pending!(svc.poll_ready());
    let (a, mut ha) = mock::pair::<&'static str, &'static str>();
    ha.allow(1);
    tx.send(Ok(Change::Insert(id(0), a))).unwrap();
    assert!(svc.is_woken(), "discovery must wake the balancer");
    assert_ready_ok!(svc.poll_ready());
    // Removed again: pending once more.
    tx.send(Ok(Change::Remove(id(0)))).unwrap();
    assert_pending!(svc.poll_ready());
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_that_errors_is_retried_not_lost() {
    let (tx, discover) = feed();
    let (a, mut ha) = mock::pair::<&'static str, &'static str>();
    tx.send(Ok(Change::Insert(id(0), a))).unwrap();
    ha.send_error("connection refused");
    let mut svc = Spawn::new(
        LoadBalanceLayer::new(Strategy::RoundRobin)
            .endpoint_retry(Duration::from_secs(2))
            .layer(discover),
    );
    assert_pending!(svc.poll_ready());
    ha.allow(1);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_pending!(svc.poll_ready(), "still resting");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(svc.is_woken(), "the retry timer wakes the balancer");
    assert_ready_ok!(svc.poll_ready());
    let fut = svc.call("again");
    let (req, send) = ha.next_request().await.unwrap();
    assert_eq!(req, "again");
    send.send_response("ok");
    assert_eq!(fut.await.unwrap(), "ok");
    drop(tx);
}

#[tokio::test(start_paused = true)]
async fn no_endpoints_fails_after_the_configured_wait() {
    let (tx, discover) = feed::<mock::Mock<&'static str, &'static str>>();
    let mut svc = Spawn::new(
        LoadBalanceLayer::new(Strategy::RoundRobin)
            .no_endpoints_timeout(Duration::from_millis(500))
            .layer(discover),
    );
    assert_pending!(svc.poll_ready());
    tokio::time::advance(Duration::from_millis(499)).await;
    assert_pending!(svc.poll_ready());
    tokio::time::advance(Duration::from_millis(1)).await;
    let err = match svc.poll_ready() {
        std::task::Poll::Ready(Err(e)) => e,
        other => panic!("expected NoEndpoints, got {other:?}"),
    };
    let no = err
        .downcast_ref::<NoEndpoints>()
        .expect("typed NoEndpoints");
    assert_eq!(no.waited(), Duration::from_millis(500));
    assert_eq!(no.known(), 0);
    drop(tx);
}

#[tokio::test]
async fn a_busy_endpoints_turns_are_shared_evenly_by_the_others() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower::util::BoxService;
    for strategy in [Strategy::RoundRobin, Strategy::Weighted] {
        let (tx, discover) = feed::<BoxService<&'static str, &'static str, tower::BoxError>>();
        let counts: Arc<Vec<AtomicUsize>> = Arc::new((0..3).map(|_| AtomicUsize::new(0)).collect());
        // Endpoint 1 is never ready.
        let (busy, mut busy_handle) = mock::pair::<&'static str, &'static str>();
        busy_handle.allow(0);
        for n in 0..3 {
            let svc = if n == 1 {
                BoxService::new(busy.clone())
            } else {
                let counts = counts.clone();
                BoxService::new(tower::service_fn(move |_: &'static str| {
                    counts[n].fetch_add(1, Ordering::SeqCst);
                    async { Ok::<_, tower::BoxError>("ok") }
                }))
            };
            tx.send(Ok(Change::Insert(id(n), svc))).unwrap();
        }
        let mut svc = Spawn::new(LoadBalanceLayer::new(strategy).layer(discover));
        for _ in 0..100 {
            assert_ready_ok!(svc.poll_ready());
            svc.call("x").await.unwrap();
        }
        let got: Vec<usize> = counts.iter().map(|c| c.load(Ordering::SeqCst)).collect();
        assert_eq!(
            got,
            [50, 0, 50],
            "{strategy}: the busy endpoint's turns went to one neighbour"
        );
    }
}
