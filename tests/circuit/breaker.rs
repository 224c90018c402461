//! The imperative `CircuitBreaker`: every transition on paused time, events,
//! permits under contention, cancellation, bounded keys.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fluxor_registry::circuit::{Backoff, Outcome};
use fluxor_registry::{
    CircuitBreaker, CircuitBreakerConfig, CircuitError, CircuitState, Event, EventHub,
    ServiceDefinition, ServiceRegistry,
};
use tokio::sync::{Barrier, Notify, Semaphore};
use tokio::time::{Instant, advance};

const S: Duration = Duration::from_secs(1);

fn breaker(f: impl FnOnce(&mut CircuitBreakerConfig)) -> CircuitBreaker {
    let mut c = CircuitBreakerConfig {
        failure_threshold: 3,
        reset_timeout: 30 * S,
        ..Default::default()
    };
    f(&mut c);
    CircuitBreaker::try_new(c).unwrap()
}

async fn fail(b: &CircuitBreaker, key: &str) -> CircuitError<&'static str> {
    b.execute(key, || async { Err::<(), _>("boom") })
        .await
        .unwrap_err()
}

async fn succeed(b: &CircuitBreaker, key: &str) -> Result<u32, CircuitError<&'static str>> {
    b.execute(key, || async { Ok(7) }).await
}

fn names(events: &mut fluxor_registry::Subscription) -> Vec<(String, &'static str)> {
    std::iter::from_fn(|| events.try_recv().unwrap())
        .map(|e| (e.key().to_owned(), e.name()))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn every_transition_on_paused_time_with_events() {
    let hub = EventHub::default();
    let mut events = hub.subscribe();
    let b = breaker(|_| {}).with_events(hub);

    for _ in 0..2 {
        assert!(matches!(fail(&b, "inv").await, CircuitError::Inner("boom")));
    }
    assert_eq!(b.get_state("inv"), CircuitState::Closed);
    assert_eq!(fail(&b, "inv").await, CircuitError::Inner("boom"));
    assert_eq!(b.get_state("inv"), CircuitState::Open);
    // Keys are independent.
    assert_eq!(b.get_state("other"), CircuitState::Closed);
    assert_eq!(succeed(&b, "other").await, Ok(7));

    let ran = AtomicUsize::new(0);
    advance(10 * S).await;
    let rejected = b
        .execute("inv", || async {
            ran.fetch_add(1, Ordering::SeqCst);
            Ok::<_, &str>(1)
        })
        .await
        .unwrap_err();
    assert_eq!(
        ran.load(Ordering::SeqCst),
        0,
        "an open circuit runs nothing"
    );
    match rejected {
        CircuitError::Open { key, retry_after } => {
            assert_eq!(&*key, "inv");
            assert_eq!(retry_after, Some(20 * S));
        }
        other => panic!("{other:?}"),
    }

    advance(20 * S).await;
    assert_eq!(b.get_state("inv"), CircuitState::HalfOpen);
    // A failed trial reopens for a full reset timeout.
    assert_eq!(fail(&b, "inv").await, CircuitError::Inner("boom"));
    assert_eq!(b.get_state("inv"), CircuitState::Open);
    advance(29 * S).await;
    assert!(succeed(&b, "inv").await.unwrap_err().is_open());
    advance(S).await;
    assert_eq!(succeed(&b, "inv").await, Ok(7));
    assert_eq!(b.get_state("inv"), CircuitState::Closed);

    assert_eq!(
        names(&mut events),
        [
            ("inv".into(), "circuit-breaker-open"),
            ("inv".into(), "circuit-breaker-half-open"),
            ("inv".into(), "circuit-breaker-open"),
            ("inv".into(), "circuit-breaker-half-open"),
            ("inv".into(), "circuit-breaker-closed"),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn backoff_lengthens_each_trip_in_a_row() {
    let b = breaker(|c| {
        c.failure_threshold = 1;
        c.reset_timeout = 10 * S;
        c.backoff = Some(Backoff::new(2.0, 25 * S));
    });
    fail(&b, "k").await;
    let mut waits = vec![];
    for _ in 0..3 {
        let CircuitError::Open { retry_after, .. } = succeed(&b, "k").await.unwrap_err() else {
            panic!("not open")
        };
        let wait = retry_after.unwrap();
        waits.push(wait);
        advance(wait).await;
        fail(&b, "k").await; // the trial fails: trip again
    }
    assert_eq!(waits, [10 * S, 20 * S, 25 * S]);
}

#[tokio::test(start_paused = true)]
async fn trip_and_reset_by_hand() {
    let hub = EventHub::default();
    let mut events = hub.subscribe();
    let b = breaker(|_| {}).with_events(hub);
    b.trip("k");
    assert_eq!(b.get_state("k"), CircuitState::Open);
    advance(Duration::from_secs(3600)).await;
    assert_eq!(
        succeed(&b, "k").await,
        Err(CircuitError::Open {
            key: "k".into(),
            retry_after: None
        }),
        "a tripped circuit stays open until reset"
    );
    b.reset("k");
    assert_eq!(b.get_state("k"), CircuitState::Closed);
    assert_eq!(succeed(&b, "k").await, Ok(7));
    let seen = names(&mut events);
    assert_eq!(
        seen,
        [
            ("k".into(), "circuit-breaker-open"),
            ("k".into(), "circuit-breaker-closed")
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn classification_by_closure_counts_429_ignores_404_and_fails_slow_calls() {
    let b = breaker(|c| c.failure_threshold = 2);
    let classify = |r: &Result<u16, ()>, elapsed: Duration| match r {
        _ if elapsed > 2 * S => Outcome::Failure,
        Ok(404) => Outcome::Ignore,
        Ok(429) | Ok(500..) | Err(_) => Outcome::Failure,
        Ok(_) => Outcome::Success,
    };
    let call = |code: u16, took: Duration| {
        let b = b.clone();
        async move {
            b.execute_classified("k", &classify, || async move {
                tokio::time::sleep(took).await;
                Ok(code)
            })
            .await
        }
    };
    call(429, S).await.unwrap();
    for _ in 0..5 {
        call(404, S).await.unwrap(); // ignored: the run of failures goes on
    }
    assert_eq!(b.get_state("k"), CircuitState::Closed);
    call(200, 3 * S).await.unwrap(); // slow: a failure
    assert_eq!(b.get_state("k"), CircuitState::Open);
}

/// 1,000 callers race for a half-open circuit's trial permits; exactly
/// `half_open_max_calls` get one. A multi-threaded runtime gives real
/// parallelism, and tokio cannot pause its clock, so the circuit waits out a
/// 1 ms reset timeout on the real clock (`sleep_until` the deadline the
/// circuit reported; nothing else is waited for).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousand_concurrent_callers_get_exactly_n_trial_permits() {
    const CALLERS: usize = 1000;
    const PERMITS: u32 = 3;
    let b = breaker(|c| {
        c.failure_threshold = 1;
        c.reset_timeout = Duration::from_millis(1);
        c.half_open_max_calls = PERMITS;
        c.success_threshold = PERMITS;
    });
    fail(&b, "hot").await;
    let CircuitError::Open { retry_after, .. } = succeed(&b, "hot").await.unwrap_err() else {
        panic!("not open")
    };
    tokio::time::sleep_until(Instant::now() + retry_after.unwrap()).await;

    let start = Arc::new(Barrier::new(CALLERS));
    let hold = Arc::new(Semaphore::new(0)); // trials wait here until all have tried
    let ran = Arc::new(AtomicUsize::new(0));
    let arrived = Arc::new(AtomicUsize::new(0));
    let all_arrived = Arc::new(Notify::new());
    let arrive = {
        let (arrived, all_arrived) = (arrived.clone(), all_arrived.clone());
        move || {
            if arrived.fetch_add(1, Ordering::SeqCst) + 1 == CALLERS {
                all_arrived.notify_one();
            }
        }
    };
    let tasks: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (b, start, hold, ran) = (b.clone(), start.clone(), hold.clone(), ran.clone());
            let arrive = arrive.clone();
            tokio::spawn(async move {
                start.wait().await;
                let result = b
                    .execute("hot", || async {
                        ran.fetch_add(1, Ordering::SeqCst);
                        arrive();
                        let _ = hold.acquire().await;
                        Ok::<_, ()>(())
                    })
                    .await;
                if result.is_err() {
                    arrive();
                }
                result
            })
        })
        .collect();
    // Every caller has been admitted or rejected; only then may trials end
    // (a trial ending early would close the circuit for the late callers).
    all_arrived.notified().await;
    hold.add_permits(CALLERS);
    let mut rejected = 0;
    for t in tasks {
        if let Err(e) = t.await.unwrap() {
            assert!(e.is_open(), "{e:?}");
            rejected += 1;
        }
    }
    assert_eq!(ran.load(Ordering::SeqCst), PERMITS as usize);
    assert_eq!(rejected, CALLERS - PERMITS as usize);
    assert_eq!(b.get_state("hot"), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_trial_gives_its_permit_back_without_counting() {
    let b = breaker(|c| {
        c.failure_threshold = 1;
        c.success_threshold = 1;
    });
    fail(&b, "k").await;
    advance(30 * S).await;

    // The trial call hangs and is then abandoned (e.g. by a timeout).
    let hung = b.execute("k", std::future::pending::<Result<(), ()>>);
    let timed_out = tokio::time::timeout(S, hung).await;
    assert!(timed_out.is_err());
    assert_eq!(b.get_state("k"), CircuitState::HalfOpen, "nothing counted");

    // The permit is free again: the next call is the trial, and closes.
    assert_eq!(succeed(&b, "k").await, Ok(7));
    assert_eq!(b.get_state("k"), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn while_a_trial_runs_other_callers_are_rejected() {
    let b = breaker(|c| c.failure_threshold = 1);
    fail(&b, "k").await;
    advance(30 * S).await;
    let gate = Arc::new(Semaphore::new(0));
    let trial = {
        let (b, gate) = (b.clone(), gate.clone());
        tokio::spawn(async move {
            b.execute("k", || async move {
                let _ = gate.acquire().await;
                Ok::<_, ()>(())
            })
            .await
        })
    };
    tokio::task::yield_now().await;
    assert_eq!(
        succeed(&b, "k").await,
        Err(CircuitError::Open {
            key: "k".into(),
            retry_after: None
        })
    );
    gate.add_permits(1);
    trial.await.unwrap().unwrap();
    assert_eq!(b.get_state("k"), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn keys_are_bounded_evicting_idle_closed_circuits_first() {
    let b = breaker(|c| c.max_keys = 2);
    succeed(&b, "a").await.unwrap();
    b.trip("b");
    succeed(&b, "c").await.unwrap();
    assert_eq!(b.len(), 2);
    assert_eq!(
        b.get_state("b"),
        CircuitState::Open,
        "the open circuit is kept"
    );
    for i in 0..100 {
        succeed(&b, &format!("k{i}")).await.unwrap();
    }
    assert_eq!(b.len(), 2);
    assert_eq!(b.get_state("b"), CircuitState::Open);
    assert!(b.remove("b"));
    assert_eq!(b.get_state("b"), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn attached_to_a_registry_it_publishes_there_and_forgets_deregistered_instances() {
    let registry = ServiceRegistry::builder().build().await.unwrap();
    let instance = registry
        .register(ServiceDefinition::new("inv", "127.0.0.1", 3001))
        .await
        .unwrap();
    let id = instance.id().as_str().to_owned();
    let b = breaker(|c| c.failure_threshold = 1)
        .attach(&registry)
        .unwrap();
    let mut events = registry.subscribe();

    fail(&b, &id).await;
    // Keys may be given as instance ids.
    assert_eq!(b.get_state(instance.id()), CircuitState::Open);
    let event = events.recv().await.unwrap();
    assert!(
        matches!(&event, Event::CircuitOpen { key, retry_after } if *key == id && *retry_after == 30 * S)
    );

    registry.deregister(instance.id()).await.unwrap();
    for _ in 0..100 {
        if b.is_empty() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(b.is_empty(), "the instance's circuit is removed with it");
}

#[test]
fn attach_outside_a_runtime_is_a_typed_error() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let registry = rt.block_on(ServiceRegistry::builder().build()).unwrap();
    let err = breaker(|_| {}).attach(&registry).unwrap_err();
    assert!(err.to_string().contains("tokio runtime"));
}

#[test]
fn a_bad_config_is_a_typed_error() {
    let err = CircuitBreaker::try_new(CircuitBreakerConfig {
        half_open_max_calls: 0,
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(err.field(), "half_open_max_calls");
    assert!(err.to_string().contains("half_open_max_calls"));
}
