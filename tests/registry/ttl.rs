use std::time::Duration;

use fluxor_registry::{
    DeregisterReason, Event, InstanceId, Query, ServiceDefinition, ServiceRegistry,
};
use tokio::time::advance;

/// Lets every task that is ready run (the expiry task, on paused time).
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn missed_heartbeats_expire_with_reason_expired() {
    let registry = ServiceRegistry::builder().build().await.unwrap();
    let mut events = registry.subscribe();
    let ttl = Duration::from_secs(5);
    let beating = registry
        .register(ServiceDefinition::new("svc", "localhost", 1).ttl(ttl))
        .await
        .unwrap();
    let silent = registry
        .register(ServiceDefinition::new("svc", "localhost", 2).ttl(ttl))
        .await
        .unwrap();
    let forever = registry
        .register(ServiceDefinition::new("svc", "localhost", 3))
        .await
        .unwrap();
    for _ in 0..3 {
        events.recv().await.unwrap();
    }

    advance(Duration::from_secs(4)).await;
    settle().await;
    assert_eq!(registry.len(), 3, "nothing is due at 4s");
    registry.heartbeat(beating.id()).await.unwrap();

    advance(Duration::from_millis(1_001)).await;
    match events.recv().await.unwrap() {
        Event::Deregistered { instance, reason } => {
            assert_eq!(instance.id(), silent.id());
            assert_eq!(reason, DeregisterReason::Expired);
            assert_eq!(reason.to_string(), "expired");
        }
        other => panic!("unexpected {other:?}"),
    }
    settle().await;
    let mut left: Vec<_> = registry
        .find_services(&Query::name("svc"))
        .iter()
        .map(|i| i.port())
        .collect();
    left.sort();
    assert_eq!(left, [1, 3], "the heartbeat at 4s kept port 1 until 9s");

    advance(Duration::from_secs(4)).await;
    match events.recv().await.unwrap() {
        Event::Deregistered { instance, reason } => {
            assert_eq!(instance.id(), beating.id());
            assert_eq!(reason, DeregisterReason::Expired);
        }
        other => panic!("unexpected {other:?}"),
    }
    advance(Duration::from_secs(3600)).await;
    settle().await;
    assert_eq!(registry.get_all_services(), vec![forever]);
}

#[tokio::test(start_paused = true)]
async fn reregistration_restarts_and_can_remove_the_ttl() {
    let registry = ServiceRegistry::builder().build().await.unwrap();
    let id = InstanceId::new("svc-1").unwrap();
    let def = || ServiceDefinition::new("svc", "localhost", 1).id(id.clone());
    registry
        .register(def().ttl(Duration::from_secs(2)))
        .await
        .unwrap();
    advance(Duration::from_millis(1_500)).await;
    registry
        .register(def().ttl(Duration::from_secs(2)))
        .await
        .unwrap();
    advance(Duration::from_millis(1_000)).await;
    settle().await;
    assert_eq!(registry.len(), 1, "re-registration restarted the TTL");

    // Without a TTL it never expires, even though an old heap entry is due.
    registry.register(def()).await.unwrap();
    advance(Duration::from_secs(60)).await;
    settle().await;
    assert_eq!(registry.len(), 1);

    // A shorter TTL than before is honoured.
    let mut events = registry.subscribe();
    registry
        .register(def().ttl(Duration::from_secs(10)))
        .await
        .unwrap();
    registry
        .register(def().ttl(Duration::from_secs(1)))
        .await
        .unwrap();
    advance(Duration::from_millis(1_001)).await;
    loop {
        if let Event::Deregistered { reason, .. } = events.recv().await.unwrap() {
            assert_eq!(reason, DeregisterReason::Expired);
            break;
        }
    }
    assert!(registry.is_empty());
}

#[tokio::test(start_paused = true)]
async fn many_instances_expire_on_time() {
    let registry = ServiceRegistry::builder()
        .event_capacity(4096)
        .build()
        .await
        .unwrap();
    let mut events = registry.subscribe();
    for i in 0..1_000u16 {
        let ttl = Duration::from_millis(100 + u64::from(i % 10) * 100);
        registry
            .register(ServiceDefinition::new("svc", "localhost", i + 1).ttl(ttl))
            .await
            .unwrap();
    }
    // Check half-way between deadlines, clear of timer rounding.
    advance(Duration::from_millis(50)).await;
    for step in 1..=10u64 {
        advance(Duration::from_millis(100)).await;
        settle().await;
        assert_eq!(
            registry.len() as u64,
            1_000 - step * 100,
            "at {}ms",
            step * 100 + 50
        );
    }
    let mut expired = 0;
    while let Some(event) = events.try_recv().unwrap() {
        if matches!(
            event,
            Event::Deregistered {
                reason: DeregisterReason::Expired,
                ..
            }
        ) {
            expired += 1;
        }
    }
    assert_eq!(expired, 1_000);
}
