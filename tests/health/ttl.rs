//! TTL checks on paused time: refreshed by pass/warn/fail and by registry
//! heartbeats; critical when not refreshed; deregistration after being
//! critical too long.

use std::time::Duration;

use HealthStatus::{Critical, Passing, Unknown, Warning};
use fluxor_registry::{
    CheckSpec, DeregisterReason, Event, HealthChecker, HealthCheckerConfig, HealthConfig,
    HealthError, HealthStatus, InstanceId, Query, ServiceDefinition, ServiceInstance,
    ServiceRegistry, Subscription,
};

use crate::servers::describe;

const TTL: Duration = Duration::from_secs(10);

async fn setup() -> (
    ServiceRegistry,
    HealthChecker,
    ServiceInstance,
    Subscription,
) {
    let registry = ServiceRegistry::builder().build().await.unwrap();
    let checker = HealthChecker::new(
        registry.clone(),
        HealthCheckerConfig {
            interval: Duration::from_secs(1),
            jitter: 0.0,
            ..Default::default()
        },
    );
    let instance = registry
        .register(ServiceDefinition::new("worker", "127.0.0.1", 7000))
        .await
        .unwrap();
    let events = registry.subscribe();
    (registry, checker, instance, events)
}

fn ttl_config(deregister_critical_after: Option<Duration>) -> HealthConfig {
    HealthConfig {
        checks: vec![CheckSpec::ttl(TTL).name("alive")],
        deregister_critical_after,
        ..Default::default()
    }
}

/// Health events for `id` published so far.
fn drain(events: &mut Subscription, id: &InstanceId) -> Vec<(&'static str, HealthStatus)> {
    let mut seen = Vec::new();
    while let Ok(Some(e)) = events.try_recv() {
        if e.key() == id.as_str() && matches!(e, Event::Healthy { .. } | Event::Unhealthy { .. }) {
            seen.push(describe(&e));
        }
    }
    seen
}

/// Lets the scheduler run what is due at the current paused instant.
async fn settle() {
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn ttl_passes_warns_fails_and_expires() {
    let (registry, checker, instance, mut events) = setup().await;
    let id = instance.id().clone();
    checker
        .start_health_checks(&instance, ttl_config(None))
        .unwrap();
    assert_eq!(drain(&mut events, &id), [("service-unhealthy", Unknown)]);
    let healthy = Query::name("worker").healthy_only();
    assert!(registry.find_services(&healthy).is_empty());

    checker.pass_ttl(&id, "alive", "all good").unwrap();
    assert_eq!(drain(&mut events, &id), [("service-healthy", Passing)]);
    assert_eq!(registry.find_services(&healthy).len(), 1);
    let report = checker.get_health_status(&id).unwrap();
    assert_eq!(
        report.check("alive").unwrap().last.as_ref().unwrap().output,
        "all good"
    );

    // Refreshed within the TTL: stays passing.
    tokio::time::sleep(Duration::from_secs(8)).await;
    checker.pass_ttl(&id, "alive", "still good").unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(checker.get_health_status(&id).unwrap().status, Passing);
    assert!(drain(&mut events, &id).is_empty());

    // Not refreshed for longer than the TTL: critical, once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(drain(&mut events, &id), [("service-unhealthy", Critical)]);
    let report = checker.get_health_status(&id).unwrap();
    assert!(
        report.checks[0]
            .last
            .as_ref()
            .unwrap()
            .output
            .contains("TTL expired")
    );
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(
        drain(&mut events, &id).is_empty(),
        "expiry reported more than once"
    );
    assert_eq!(
        checker.get_health_status(&id).unwrap().checks[0].consecutive_failures,
        1
    );

    checker.warn_ttl(&id, "alive", "slow disk").unwrap();
    assert_eq!(drain(&mut events, &id), [("service-healthy", Warning)]);
    checker.fail_ttl(&id, "alive", "disk full").unwrap();
    assert_eq!(drain(&mut events, &id), [("service-unhealthy", Critical)]);
    assert_eq!(
        checker.get_health_status(&id).unwrap().checks[0]
            .last
            .as_ref()
            .unwrap()
            .output,
        "disk full"
    );

    // Errors name what was wrong.
    assert!(matches!(
        checker.pass_ttl(&id, "nope", ""),
        Err(HealthError::NoSuchTtlCheck { .. })
    ));
    let other: InstanceId = "other-1".parse().unwrap();
    assert!(matches!(
        checker.pass_ttl(&other, "alive", ""),
        Err(HealthError::NotChecked(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn registry_heartbeats_refresh_a_ttl_check() {
    let (registry, checker, instance, mut events) = setup().await;
    let id = instance.id().clone();
    checker
        .start_health_checks(&instance, ttl_config(None))
        .unwrap();
    drain(&mut events, &id);

    registry.heartbeat(&id).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    settle().await;
    assert_eq!(drain(&mut events, &id), [("service-healthy", Passing)]);
    let report = checker.get_health_status(&id).unwrap();
    assert!(
        report.checks[0]
            .last
            .as_ref()
            .unwrap()
            .output
            .contains("heartbeat")
    );

    // Heartbeats every 5 s keep it passing for a minute.
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_secs(5)).await;
        registry.heartbeat(&id).await.unwrap();
    }
    assert!(drain(&mut events, &id).is_empty());
    // Then they stop: critical after the TTL.
    tokio::time::sleep(TTL + Duration::from_secs(1)).await;
    settle().await;
    assert_eq!(drain(&mut events, &id), [("service-unhealthy", Critical)]);
    // And one heartbeat brings it back within an interval.
    registry.heartbeat(&id).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    settle().await;
    assert_eq!(drain(&mut events, &id), [("service-healthy", Passing)]);
}

#[tokio::test(start_paused = true)]
async fn never_refreshed_is_unknown_then_critical() {
    let (_registry, checker, instance, mut events) = setup().await;
    let id = instance.id().clone();
    checker
        .start_health_checks(&instance, ttl_config(None))
        .unwrap();
    drain(&mut events, &id);
    tokio::time::sleep(TTL - Duration::from_secs(1)).await;
    assert_eq!(checker.get_health_status(&id).unwrap().status, Unknown);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(checker.get_health_status(&id).unwrap().status, Critical);
    // unknown -> critical is no healthy<->unhealthy transition: no event.
    assert!(drain(&mut events, &id).is_empty());
}

#[tokio::test(start_paused = true)]
async fn critical_too_long_deregisters_and_deregistration_stops_checks() {
    let (registry, checker, instance, mut events) = setup().await;
    let id = instance.id().clone();
    checker
        .start_health_checks(&instance, ttl_config(Some(Duration::from_secs(30))))
        .unwrap();
    checker.pass_ttl(&id, "alive", "up").unwrap();
    // Critical at 10 s; deregistered 30 s later.
    tokio::time::sleep(Duration::from_secs(35)).await;
    assert!(
        registry.get_service(&id).is_some(),
        "deregistered too early"
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    settle().await;
    assert!(registry.get_service(&id).is_none());
    let mut reason = None;
    while let Ok(Some(e)) = events.try_recv() {
        if let Event::Deregistered { reason: r, .. } = e {
            reason = Some(r);
        }
    }
    assert_eq!(reason, Some(DeregisterReason::Critical));
    // Its checks stopped with it.
    assert!(checker.get_health_status(&id).is_none());
    assert_eq!(checker.stats().instances, 0);

    // A plain deregistration stops checks too.
    let other = registry
        .register(ServiceDefinition::new("worker", "127.0.0.1", 7001))
        .await
        .unwrap();
    checker
        .start_health_checks(&other, ttl_config(None))
        .unwrap();
    assert!(checker.get_health_status(other.id()).is_some());
    registry.deregister(other.id()).await.unwrap();
    settle().await;
    assert!(checker.get_health_status(other.id()).is_none());
}
