//! The checker's contract: typed errors for bad input, instances without
//! checks count as passing, restarting and stopping checks.

use std::time::Duration;

use fluxor_registry::{
    CheckSpec, HealthChecker, HealthCheckerConfig, HealthConfig, HealthError, HealthStatus,
    InstanceId, Protocol, ServiceDefinition, ServiceRegistry,
};

fn config(checks: Vec<CheckSpec>) -> HealthConfig {
    HealthConfig {
        checks,
        ..Default::default()
    }
}

#[tokio::test(start_paused = true)]
async fn bad_input_gets_typed_errors() {
    let registry = ServiceRegistry::builder().build().await.unwrap();
    let checker = HealthChecker::new(registry.clone(), HealthCheckerConfig::default());
    let instance = registry
        .register(ServiceDefinition::new("web", "127.0.0.1", 8080))
        .await
        .unwrap();
    let start = |checks| checker.start_health_checks(&instance, config(checks));
    let invalid = |r: Result<(), HealthError>, needle: &str| match r {
        Err(HealthError::InvalidCheck { reason, .. }) => {
            assert!(reason.contains(needle), "{reason:?} lacks {needle:?}")
        }
        other => panic!("expected an invalid check, got {other:?}"),
    };
    invalid(
        start(vec![CheckSpec::http("health")]),
        "must start with '/'",
    );
    invalid(
        start(vec![CheckSpec::http("/h").header("bad header", "x")]),
        "header name",
    );
    invalid(start(vec![CheckSpec::http("/h").method("GE T")]), "method");
    invalid(
        start(vec![CheckSpec::tcp().header("a", "b")]),
        "applies to http checks",
    );
    invalid(
        start(vec![CheckSpec::exec(Vec::<String>::new())]),
        "argv is empty",
    );
    invalid(start(vec![CheckSpec::ttl(Duration::ZERO)]), "ttl");
    invalid(
        start(vec![CheckSpec::tcp().timeout(Duration::ZERO)]),
        "timeout",
    );
    invalid(
        start(vec![CheckSpec::tcp().failures_before_critical(0)]),
        "thresholds",
    );
    assert!(matches!(
        start(vec![CheckSpec::tcp().name("a"), CheckSpec::http("/").name("a")]),
        Err(HealthError::DuplicateCheck(name)) if name == "a"
    ));
    // Unnamed checks of one kind get distinct names.
    start(vec![CheckSpec::tcp(), CheckSpec::tcp()]).unwrap();
    let report = checker.get_health_status(instance.id()).unwrap();
    let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["tcp", "tcp-2"]);

    let tls = registry
        .register(ServiceDefinition::new("tls", "127.0.0.1", 8443).protocol(Protocol::Https))
        .await
        .unwrap();
    assert!(matches!(
        checker.start_health_checks(&tls, config(vec![CheckSpec::http("/")])),
        Err(HealthError::Unsupported { .. })
    ));
    registry.deregister(tls.id()).await.unwrap();
    assert!(matches!(
        checker.start_health_checks(&tls, config(vec![CheckSpec::tcp()])),
        Err(HealthError::NotRegistered(_))
    ));
    let bad = HealthChecker::new(
        registry.clone(),
        HealthCheckerConfig {
            jitter: 2.0,
            ..Default::default()
        },
    );
    assert!(matches!(
        bad.start_health_checks(&instance, config(vec![])),
        Err(HealthError::InvalidConfig { .. })
    ));
    let err = bad
        .start_health_checks(&instance, config(vec![]))
        .unwrap_err();
    assert!(err.to_string().contains("jitter"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn no_checks_is_passing_and_stop_restores_passing() {
    let registry = ServiceRegistry::builder().build().await.unwrap();
    let checker = HealthChecker::new(registry.clone(), HealthCheckerConfig::default());
    let instance = registry
        .register(ServiceDefinition::new("web", "127.0.0.1", 8080))
        .await
        .unwrap();
    checker
        .start_health_checks(&instance, config(vec![]))
        .unwrap();
    let report = checker.get_health_status(instance.id()).unwrap();
    assert_eq!(report.status, HealthStatus::Passing);
    assert!(report.checks.is_empty());

    checker
        .start_health_checks(
            &instance,
            config(vec![CheckSpec::ttl(Duration::from_secs(5))]),
        )
        .unwrap();
    assert_eq!(
        registry.get_service(instance.id()).unwrap().health(),
        HealthStatus::Unknown
    );
    assert!(checker.stop_health_checks(instance.id()));
    assert!(!checker.stop_health_checks(instance.id()));
    assert!(checker.get_health_status(instance.id()).is_none());
    assert_eq!(
        registry.get_service(instance.id()).unwrap().health(),
        HealthStatus::Passing
    );
    let unknown: InstanceId = "nobody".parse().unwrap();
    assert!(checker.get_health_status(&unknown).is_none());
}

#[tokio::test(start_paused = true)]
async fn jitter_spreads_first_checks_reproducibly() {
    let registry = ServiceRegistry::builder().build().await.unwrap();
    let spread = |seed| {
        HealthChecker::new(
            registry.clone(),
            HealthCheckerConfig {
                interval: Duration::from_secs(10),
                jitter: 1.0,
                seed: Some(seed),
                ..Default::default()
            },
        )
    };
    let checker = spread(7);
    let mut ids = Vec::new();
    for i in 0..50 {
        let instance = registry
            .register(
                ServiceDefinition::new("w", "127.0.0.1", 1).id(format!("w-{i}").parse().unwrap()),
            )
            .await
            .unwrap();
        // An exec check of `true`: real, fast, no network.
        checker
            .start_health_checks(&instance, config(vec![CheckSpec::exec(["true"])]))
            .unwrap();
        ids.push(instance.id().clone());
    }
    // After 1 s of the 10 s window, only some have run: they do not all
    // fire at once.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = checker.stats().started;
    // Uniform first delays over 10 s: about 5 of 50 in the first second
    // (none, or all, if jitter were broken).
    assert!(
        (1..=15).contains(&started),
        "{started} of 50 fired in the first tenth"
    );
    // And every one has started by the end of the window.
    tokio::time::sleep(Duration::from_secs(9)).await;
    let started = checker.stats().started;
    assert!(
        started >= 50,
        "only {started} of 50 started within one interval"
    );
    for id in &ids {
        checker.stop_health_checks(id);
    }
}
