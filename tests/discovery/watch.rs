use std::time::Duration;

use fluxor_registry::{HealthStatus, Query, ServiceDefinition, Strategy};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::discovery;

async fn next(rx: &mut mpsc::UnboundedReceiver<Vec<u16>>) -> Vec<u16> {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a callback")
        .expect("open")
}

#[tokio::test(start_paused = true)]
async fn watch_fires_on_register_deregister_health_and_circuit_and_stops_after_unwatch() {
    let (registry, discovery) = discovery(Strategy::RoundRobin).await;
    let a = registry
        .register(ServiceDefinition::new("web", "127.0.0.1", 1))
        .await
        .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = discovery.watch(&Query::name("web"), move |instances| {
        let mut ports: Vec<u16> = instances.iter().map(|i| i.port()).collect();
        ports.sort();
        let _ = tx.send(ports);
    });
    assert_eq!(next(&mut rx).await, [1], "the current set first");

    let b = registry
        .register(ServiceDefinition::new("web", "127.0.0.1", 2))
        .await
        .unwrap();
    assert_eq!(next(&mut rx).await, [1, 2], "register");
    registry
        .register(ServiceDefinition::new("other", "127.0.0.1", 9))
        .await
        .unwrap();
    registry
        .set_health_status(a.id(), HealthStatus::Critical)
        .unwrap();
    assert_eq!(
        next(&mut rx).await,
        [2],
        "health change; the other service changed nothing"
    );
    registry
        .set_health_status(a.id(), HealthStatus::Passing)
        .unwrap();
    assert_eq!(next(&mut rx).await, [1, 2]);
    discovery.circuit_breaker().trip(b.id().as_str());
    assert_eq!(next(&mut rx).await, [1], "circuit opened");
    discovery.circuit_breaker().reset(b.id().as_str());
    assert_eq!(next(&mut rx).await, [1, 2], "circuit closed");
    registry.deregister(a.id()).await.unwrap();
    assert_eq!(next(&mut rx).await, [2], "deregister");

    handle.unwatch();
    registry
        .register(ServiceDefinition::new("web", "127.0.0.1", 3))
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(1)).await;
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(rx.try_recv().is_err(), "no callback after unwatch");
}

#[tokio::test]
async fn a_slow_watch_stream_gets_the_latest_set_not_a_stale_one() {
    let (registry, discovery) = discovery(Strategy::RoundRobin).await;
    let mut stream = discovery.watch_stream(&Query::name("web"));
    assert!(stream.next().await.unwrap().is_empty());
    for port in 1..=50 {
        registry
            .register(ServiceDefinition::new("web", "127.0.0.1", port))
            .await
            .unwrap();
    }
    // Read only now: whatever was skipped, the last set seen is all 50.
    let mut last = 0;
    while last != 50 {
        last = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap()
            .unwrap()
            .len();
    }
    assert_eq!(
        discovery.get_available_services(&Query::name("web")).len(),
        50
    );
}

#[tokio::test(start_paused = true)]
async fn watch_sees_an_open_circuit_readmit_its_instance_when_the_reset_timeout_passes() {
    use fluxor_registry::{
        CircuitBreaker, CircuitBreakerConfig, HealthChecker, HealthCheckerConfig, LoadBalancer,
        RequestContext, ServiceDiscovery, ServiceRegistry,
    };
    let registry = ServiceRegistry::builder().build().await.unwrap();
    let discovery = ServiceDiscovery::new(
        registry.clone(),
        HealthChecker::new(registry.clone(), HealthCheckerConfig::default()),
        LoadBalancer::new(Strategy::RoundRobin),
        CircuitBreaker::new(CircuitBreakerConfig {
            failure_threshold: 1,
            reset_timeout: Duration::from_secs(2),
            ..Default::default()
        }),
    );
    registry
        .register(ServiceDefinition::new("web", "127.0.0.1", 1))
        .await
        .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _handle = discovery.watch(&Query::name("web"), move |instances| {
        let _ = tx.send(instances.iter().map(|i| i.port()).collect::<Vec<u16>>());
    });
    assert_eq!(next(&mut rx).await, [1]);
    let _ = discovery
        .execute(
            &Query::name("web"),
            |_| async { Err::<(), _>("boom") },
            &RequestContext::default(),
        )
        .await;
    assert_eq!(next(&mut rx).await, Vec::<u16>::new(), "the circuit opened");
    // No event marks the end of the reset timeout; the watch wakes for it.
    assert_eq!(next(&mut rx).await, [1], "half-open again after 2 s");
}
