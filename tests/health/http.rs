//! HTTP checks against a real hyper server whose `/health` flips between
//! 200, 429 and 500.

use std::time::Duration;

use HealthStatus::{Critical, Passing, Unknown, Warning};
use fluxor_registry::{
    CheckSpec, HealthChecker, HealthCheckerConfig, HealthConfig, HealthStatus, Query,
    ServiceDefinition, ServiceRegistry,
};

use crate::servers::{FlipServer, describe, next_health_event};

fn fast() -> HealthCheckerConfig {
    HealthCheckerConfig {
        interval: Duration::from_millis(40),
        timeout: Duration::from_secs(5),
        jitter: 0.0,
        ..Default::default()
    }
}

#[tokio::test]
async fn scheduled_http_check_follows_200_429_500_with_one_event_per_transition() {
    let server = FlipServer::start("web").await;
    let registry = ServiceRegistry::builder().build().await.unwrap();
    let checker = HealthChecker::new(registry.clone(), fast());
    let instance = registry
        .register(ServiceDefinition::new("web", "127.0.0.1", server.port()))
        .await
        .unwrap();
    let id = instance.id().clone();
    let mut events = registry.subscribe();
    let healthy = Query::name("web").healthy_only();

    server.set_health(500);
    checker
        .start_health_checks(
            &instance,
            HealthConfig {
                checks: vec![CheckSpec::http("/health").name("http-health")],
                ..Default::default()
            },
        )
        .unwrap();
    // Checks configured: unknown, no traffic, until the first pass.
    let e = next_health_event(&mut events, &id).await;
    assert_eq!(describe(&e), ("service-unhealthy", Unknown));
    assert!(registry.find_services(&healthy).is_empty());

    // 500 while unknown: critical, but that is no healthy<->unhealthy change.
    server.wait_health_hits(2).await;
    server.set_health(200);
    let e = next_health_event(&mut events, &id).await;
    assert_eq!(describe(&e), ("service-healthy", Passing));
    assert_eq!(registry.find_services(&healthy).len(), 1);

    // 429 is warning: still healthy, so no event; then 500 is critical.
    server.set_health(429);
    let hits = server.health_hits();
    server.wait_health_hits(hits + 3).await;
    let report = checker.get_health_status(&id).unwrap();
    assert_eq!(report.status, Warning);
    assert_eq!(registry.get_service(&id).unwrap().health(), Warning);
    server.set_health(500);
    let e = next_health_event(&mut events, &id).await;
    assert_eq!(describe(&e), ("service-unhealthy", Critical));
    assert!(registry.find_services(&healthy).is_empty());
    let report = checker.get_health_status(&id).unwrap();
    let check = report.check("http-health").unwrap();
    assert_eq!(check.status, Critical);
    let last = check.last.as_ref().unwrap();
    assert!(last.output.contains("500"), "{}", last.output);
    assert!(last.output.contains("state=500"), "{}", last.output);
    assert!(check.consecutive_failures >= 1);
    assert_eq!(check.consecutive_successes, 0);

    // Back to 429: healthy again, as warning.
    server.set_health(429);
    let e = next_health_event(&mut events, &id).await;
    assert_eq!(describe(&e), ("service-healthy", Warning));

    // Exactly one event per transition: nothing else was published for it.
    let mut extra = Vec::new();
    while let Ok(Some(e)) = events.try_recv() {
        if e.key() == id.as_str() {
            extra.push(e.name());
        }
    }
    assert!(extra.is_empty(), "duplicate events: {extra:?}");

    // Every round went over one kept-alive connection.
    let hits = server.health_hits();
    assert!(hits >= 6, "{hits}");
    assert_eq!(server.connections(), 1, "connections were not reused");
    assert!(checker.stop_health_checks(&id));
    assert_eq!(registry.get_service(&id).unwrap().health(), Passing);
}

#[tokio::test]
async fn thresholds_need_consecutive_results() {
    let server = FlipServer::start("web").await;
    let registry = ServiceRegistry::builder().build().await.unwrap();
    let checker = HealthChecker::new(registry.clone(), fast());
    let instance = registry
        .register(ServiceDefinition::new("web", "127.0.0.1", server.port()))
        .await
        .unwrap();
    let id = instance.id().clone();
    let mut events = registry.subscribe();
    checker
        .start_health_checks(
            &instance,
            HealthConfig {
                checks: vec![
                    CheckSpec::http("/health")
                        .failures_before_critical(3)
                        .success_before_passing(2),
                ],
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        describe(&next_health_event(&mut events, &id).await).1,
        Unknown
    );
    assert_eq!(
        describe(&next_health_event(&mut events, &id).await).1,
        Passing
    );

    server.set_health(500);
    let e = next_health_event(&mut events, &id).await;
    assert_eq!(describe(&e), ("service-unhealthy", Critical));
    let report = checker.get_health_status(&id).unwrap();
    // It took three failures in a row to flip.
    assert!(report.checks[0].consecutive_failures >= 3, "{report:?}");

    server.set_health(200);
    let e = next_health_event(&mut events, &id).await;
    assert_eq!(describe(&e), ("service-healthy", Passing));
    let report = checker.get_health_status(&id).unwrap();
    assert!(report.checks[0].consecutive_successes >= 2, "{report:?}");
}

#[tokio::test]
async fn one_shot_http_checks_status_rules_headers_body_and_redirects() {
    let server = FlipServer::start("web").await;
    let registry = ServiceRegistry::builder().build().await.unwrap();
    let checker = HealthChecker::new(registry.clone(), fast());
    let instance = registry
        .register(ServiceDefinition::new("web", "127.0.0.1", server.port()))
        .await
        .unwrap();
    let once = |spec: CheckSpec| {
        let (checker, instance) = (checker.clone(), instance.clone());
        async move {
            let config = HealthConfig {
                checks: vec![spec],
                ..Default::default()
            };
            checker.check_health(&instance, &config).await.unwrap()
        }
    };
    for (code, want) in [
        (200, Passing),
        (204, Passing),
        (429, Warning),
        (500, Critical),
        (404, Critical),
    ] {
        server.set_health(code);
        let report = once(CheckSpec::http("/health")).await;
        assert_eq!(report.status, want, "{code}: {report:?}");
    }
    // Expected status and body override Consul's rule.
    server.set_health(503);
    assert_eq!(
        once(CheckSpec::http("/health").expect_status(503))
            .await
            .status,
        Passing
    );
    server.set_health(200);
    assert_eq!(
        once(CheckSpec::http("/health").expect_status(204))
            .await
            .status,
        Critical
    );
    assert_eq!(
        once(CheckSpec::http("/health").expect_body("state=200"))
            .await
            .status,
        Passing
    );
    let report = once(CheckSpec::http("/health").expect_body("ready")).await;
    assert_eq!(report.status, Critical);
    assert!(
        report.checks[0]
            .last
            .as_ref()
            .unwrap()
            .output
            .contains("lacks")
    );
    // Redirects are not followed: the 301 itself is critical.
    let report = once(CheckSpec::http("/moved")).await;
    assert_eq!(report.status, Critical);
    assert!(
        report.checks[0]
            .last
            .as_ref()
            .unwrap()
            .output
            .contains("301")
    );
    // Custom headers reach the server.
    once(CheckSpec::http("/health").header("x-probe", "fluxor")).await;
    assert_eq!(server.last_probe_header().as_deref(), Some("fluxor"));
    // HEAD works as a method.
    assert_eq!(
        once(CheckSpec::http("/health").method("HEAD")).await.status,
        Passing
    );
    // A timeout is critical.
    server.set_slow(Duration::from_secs(30));
    let report = once(CheckSpec::http("/slow").timeout(Duration::from_millis(100))).await;
    assert_eq!(report.status, Critical);
    let output = &report.checks[0].last.as_ref().unwrap().output;
    assert!(output.contains("timed out"), "{output}");
    // Nothing listening: critical with the connection error.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let gone = registry
        .register(ServiceDefinition::new("gone", "127.0.0.1", closed))
        .await
        .unwrap();
    let report = checker
        .check_health(
            &gone,
            &HealthConfig {
                checks: vec![CheckSpec::http("/health")],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(report.status, Critical);
}

#[tokio::test]
async fn concurrency_is_bounded() {
    let server = FlipServer::start("web").await;
    server.set_slow(Duration::from_millis(30));
    let registry = ServiceRegistry::builder().build().await.unwrap();
    let checker = HealthChecker::new(
        registry.clone(),
        HealthCheckerConfig {
            interval: Duration::from_secs(3600),
            max_concurrency: 3,
            jitter: 0.0,
            ..Default::default()
        },
    );
    let mut events = registry.subscribe();
    let mut ids = Vec::new();
    for i in 0..24 {
        let instance = registry
            .register(
                ServiceDefinition::new("web", "127.0.0.1", server.port())
                    .id(format!("web-{i}").parse().unwrap()),
            )
            .await
            .unwrap();
        checker
            .start_health_checks(
                &instance,
                HealthConfig {
                    checks: vec![CheckSpec::http("/slow")],
                    ..Default::default()
                },
            )
            .unwrap();
        ids.push(instance.id().clone());
    }
    // All 24 become healthy, at most 3 checks at a time.
    let mut healthy = 0;
    crate::servers::within(async {
        while healthy < 24 {
            if let fluxor_registry::Event::Healthy { .. } = events.recv().await.unwrap() {
                healthy += 1;
            }
        }
    })
    .await;
    assert!(server.max_in_flight() <= 3, "{}", server.max_in_flight());
    assert!(server.max_in_flight() >= 2, "checks did not overlap at all");
    let stats = checker.stats();
    assert_eq!(stats.instances, 24);
    assert_eq!(stats.started, 24);
}

#[tokio::test]
async fn re_registration_at_a_new_address_moves_the_checks() {
    let old = FlipServer::start("old").await;
    let new = FlipServer::start("new").await;
    let registry = ServiceRegistry::builder().build().await.unwrap();
    let checker = HealthChecker::new(registry.clone(), fast());
    let id: fluxor_registry::InstanceId = "web-1".parse().unwrap();
    let def = |port| ServiceDefinition::new("web", "127.0.0.1", port).id(id.clone());
    let instance = registry.register(def(old.port())).await.unwrap();
    checker
        .start_health_checks(
            &instance,
            HealthConfig {
                checks: vec![CheckSpec::http("/health")],
                ..Default::default()
            },
        )
        .unwrap();
    old.wait_health_hits(1).await;
    // Moved: the same id now lives on the other server; checks follow it.
    registry.register(def(new.port())).await.unwrap();
    new.wait_health_hits(2).await;
    // From then on the old address gets no more checks.
    let old_hits = old.health_hits();
    new.wait_health_hits(new.health_hits() + 3).await;
    assert_eq!(
        old.health_hits(),
        old_hits,
        "checks still went to the old address"
    );
    assert_eq!(checker.get_health_status(&id).unwrap().status, Passing);
}
