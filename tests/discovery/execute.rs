use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fluxor_registry::discovery::StopReason;
use fluxor_registry::{
    DiscoveryConfig, ExecuteError, HealthStatus, Query, RequestContext, ServiceDefinition, Strategy,
};

use crate::support::{HttpServer, get_text, http_client};
use crate::{dead_port, discovery};

#[tokio::test]
async fn execute_fails_over_from_a_dead_instance_with_no_error_to_the_caller() {
    let (registry, discovery) = discovery(Strategy::RoundRobin).await;
    let live = HttpServer::start("live").await;
    registry
        .register(ServiceDefinition::new("web", "127.0.0.1", live.port()))
        .await
        .unwrap();
    registry
        .register(ServiceDefinition::new(
            "web",
            "127.0.0.1",
            dead_port().await,
        ))
        .await
        .unwrap();
    let client = http_client();
    for _ in 0..20 {
        let body = discovery
            .execute(
                &Query::name("web"),
                |instance| {
                    let client = client.clone();
                    async move { get_text(&client, format!("{}/", instance.base_url())).await }
                },
                &RequestContext::default(),
            )
            .await
            .unwrap();
        assert_eq!(body, "live");
    }
    let stats = &discovery.get_stats().services["web"];
    assert_eq!(stats.successes, 20);
    assert!(
        stats.failures >= 5,
        "round-robin must have tried the dead one: {stats:?}"
    );
    assert_eq!(
        stats.retries, stats.failures,
        "each failure was retried once"
    );
    assert_eq!(live.hits(), 20);
    // Connections were counted and released.
    for instance in registry.find_services(&Query::name("web")) {
        assert_eq!(discovery.load_balancer().connections(instance.id()), 0);
    }
}

#[tokio::test(start_paused = true)]
async fn retries_never_hit_the_same_instance_twice_in_one_call() {
    let (registry, discovery) = discovery(Strategy::Random).await;
    let discovery = discovery.with_config(DiscoveryConfig::default().max_attempts(4).retry_budget(
        Duration::from_secs(10),
        1_000,
        1.0,
    ));
    for port in 1..=4 {
        registry
            .register(ServiceDefinition::new("svc", "127.0.0.1", port))
            .await
            .unwrap();
    }
    for _ in 0..50 {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let result = discovery
            .execute(
                &Query::name("svc"),
                move |instance| {
                    s.lock().unwrap().push(instance.port());
                    async { Err::<(), _>("down") }
                },
                &RequestContext::default(),
            )
            .await;
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 4, "four attempts");
        assert_eq!(
            seen.iter().collect::<HashSet<_>>().len(),
            4,
            "each on another instance: {seen:?}"
        );
        match result {
            Err(ExecuteError::Failed {
                attempts,
                last,
                stopped,
            }) => {
                assert_eq!(
                    (attempts, last, stopped),
                    (4, "down", StopReason::MaxAttempts)
                );
            }
            other => panic!("expected a failure, got {other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn the_retry_budget_stops_a_retry_storm() {
    let (registry, discovery) = discovery(Strategy::RoundRobin).await;
    // 10% of first attempts, 1 per second of reserve over 10 s.
    let discovery = discovery.with_config(
        DiscoveryConfig::default()
            .max_attempts(3)
            .backoff(Duration::ZERO, Duration::ZERO)
            .retry_budget(Duration::from_secs(10), 1, 0.1),
    );
    for port in 1..=3 {
        registry
            .register(ServiceDefinition::new("svc", "127.0.0.1", port))
            .await
            .unwrap();
    }
    let mut budget_stops = 0;
    for _ in 0..1_000 {
        let result = discovery
            .execute(
                &Query::name("svc"),
                |_| async { Err::<(), _>("down") },
                &RequestContext::default(),
            )
            .await;
        if let Err(ExecuteError::Failed {
            stopped: StopReason::BudgetExhausted,
            ..
        }) = result
        {
            budget_stops += 1;
        }
    }
    let stats = &discovery.get_stats().services["svc"];
    assert!(
        stats.retries <= 100 + 20,
        "retries {} of 1000 calls: the budget must cap them near 10%",
        stats.retries
    );
    assert!(stats.retries > 0);
    assert!(
        budget_stops >= 850,
        "{budget_stops} calls stopped by the budget"
    );
    assert_eq!(
        stats.requests,
        1_000 + stats.retries,
        "without the budget it would be 3000"
    );
}

#[tokio::test]
async fn no_instances_says_how_many_matched_were_unhealthy_or_open() {
    let (registry, discovery) = discovery(Strategy::RoundRobin).await;
    let query = Query::name("svc");
    let err = discovery
        .discover(&query, &RequestContext::default())
        .await
        .unwrap_err();
    assert_eq!((err.matched, err.unhealthy, err.open), (0, 0, 0));
    let a = registry
        .register(ServiceDefinition::new("svc", "127.0.0.1", 1))
        .await
        .unwrap();
    let b = registry
        .register(ServiceDefinition::new("svc", "127.0.0.1", 2))
        .await
        .unwrap();
    let c = registry
        .register(ServiceDefinition::new("svc", "127.0.0.1", 3))
        .await
        .unwrap();
    registry
        .set_health_status(a.id(), HealthStatus::Critical)
        .unwrap();
    discovery.circuit_breaker().trip(b.id().as_str());
    assert_eq!(
        discovery
            .discover(&query, &RequestContext::default())
            .await
            .unwrap()
            .id(),
        c.id()
    );
    assert_eq!(
        discovery.get_available_services(&query),
        vec![registry.get_service(c.id()).unwrap()]
    );
    registry.deregister(c.id()).await.unwrap();
    let err = discovery
        .discover(&query, &RequestContext::default())
        .await
        .unwrap_err();
    assert_eq!((err.matched, err.unhealthy, err.open), (2, 1, 1));
    assert!(
        err.to_string()
            .contains("2 matched, 1 unhealthy, 1 with an open circuit"),
        "{err}"
    );
    let result = discovery
        .execute(
            &query,
            |_| async { Ok::<_, ()>(()) },
            &RequestContext::default(),
        )
        .await;
    assert!(matches!(result, Err(ExecuteError::NoInstances(_))));
    let stats = discovery.get_stats();
    assert_eq!(stats.services["svc"].rejections, 1);
    assert_eq!(stats.services["svc"].circuits[b.id().as_str()], "open");
    let json = serde_json::to_value(&stats).unwrap();
    assert_eq!(json["strategy"], "round-robin");
    assert_eq!(json["services"]["svc"]["health"]["critical"], 1);
}

#[tokio::test(start_paused = true)]
async fn a_retry_storm_on_one_service_leaves_anothers_budget_alone() {
    let (registry, discovery) = discovery(Strategy::RoundRobin).await;
    let discovery = discovery.with_config(
        DiscoveryConfig::default()
            .max_attempts(2)
            .backoff(Duration::ZERO, Duration::ZERO)
            .retry_budget(Duration::from_secs(10), 1, 0.0),
    );
    for (name, port) in [("a", 1), ("a", 2), ("b", 3), ("b", 4)] {
        registry
            .register(ServiceDefinition::new(name, "127.0.0.1", port))
            .await
            .unwrap();
    }
    // Spend service a's budget (a reserve of 1/s over 10 s, no share).
    let mut stopped = 0;
    for _ in 0..100 {
        let result = discovery
            .execute(
                &Query::name("a"),
                |_| async { Err::<(), _>("down") },
                &RequestContext::default(),
            )
            .await;
        if let Err(ExecuteError::Failed {
            stopped: StopReason::BudgetExhausted,
            ..
        }) = result
        {
            stopped += 1;
        }
    }
    assert!(stopped >= 80, "a's budget ran out: {stopped}");
    // Service b still retries its first failure.
    let result = discovery
        .execute(
            &Query::name("b"),
            |_| async { Err::<(), _>("down") },
            &RequestContext::default(),
        )
        .await;
    match result {
        Err(ExecuteError::Failed {
            attempts, stopped, ..
        }) => {
            assert_eq!((attempts, stopped), (2, StopReason::MaxAttempts));
        }
        other => panic!("expected two attempts on b, got {other:?}"),
    }
}
