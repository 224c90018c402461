use std::time::Duration;

use fluxor_registry::{
    DeregisterReason, Event, HealthStatus, InstanceId, Protocol, Query, RegistryError,
    ServiceDefinition, ServiceRegistry, SubscriptionError,
};
use serde_json::json;

async fn registry() -> ServiceRegistry {
    ServiceRegistry::builder().build().await.unwrap()
}

#[tokio::test]
async fn register_find_get_deregister() {
    let registry = registry().await;
    let mut events = registry.subscribe();
    let a = registry
        .register(
            ServiceDefinition::new("inventory", "10.0.0.1", 3001)
                .version("1.2.0")
                .protocol(Protocol::Http)
                .tags(["core", "eu"])
                .metadata("region", "us-east-1")
                .metadata("capabilities", json!(["read", "write"])),
        )
        .await
        .unwrap();
    let b = registry
        .register(
            ServiceDefinition::new("inventory", "10.0.0.2", 3001)
                .version("2.0.0")
                .tag("core"),
        )
        .await
        .unwrap();
    let c = registry
        .register(ServiceDefinition::new("billing", "localhost", 4000))
        .await
        .unwrap();

    assert!(a.id().as_str().starts_with("inventory-"));
    assert_eq!(registry.len(), 3);
    assert_eq!(registry.get_service(b.id()), Some(b.clone()));
    assert_eq!(registry.service_names(), ["billing", "inventory"]);

    let ids = |q: Query| -> Vec<InstanceId> {
        registry
            .find_services(&q)
            .iter()
            .map(|i| i.id().clone())
            .collect()
    };
    let mut both = vec![a.id().clone(), b.id().clone()];
    both.sort();
    assert_eq!(ids(Query::name("inventory")), both);
    assert_eq!(
        ids(Query::name("inventory").version("^1").unwrap()),
        [a.id().clone()]
    );
    assert_eq!(
        ids(Query::name("inventory").tags(["core", "eu"])),
        [a.id().clone()]
    );
    assert_eq!(
        ids(Query::name("inventory").metadata("capabilities", json!(["read", "write"]))),
        [a.id().clone()]
    );
    assert_eq!(
        ids(Query::any().metadata("region", "us-east-1")),
        [a.id().clone()]
    );
    assert_eq!(ids(Query::name("billing").protocol(Protocol::Grpc)), []);
    assert_eq!(ids(Query::name("nope")), []);
    assert_eq!(registry.get_all_services().len(), 3);

    for expected in [&a, &b, &c] {
        match events.recv().await.unwrap() {
            Event::Registered { instance, replaced } => {
                assert_eq!(&instance, expected);
                assert!(!replaced);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    assert_eq!(registry.deregister(a.id()).await.unwrap(), Some(a.clone()));
    assert_eq!(registry.deregister(a.id()).await.unwrap(), None);
    assert_eq!(ids(Query::name("inventory")), [b.id().clone()]);
    match events.recv().await.unwrap() {
        Event::Deregistered { instance, reason } => {
            assert_eq!(instance.id(), a.id());
            assert_eq!(reason, DeregisterReason::Requested);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        events.try_recv().unwrap().is_none(),
        "no event for a no-op deregister"
    );
}

#[tokio::test]
async fn reregistering_an_id_updates_in_place_with_one_event() {
    let registry = registry().await;
    let mut events = registry.subscribe();
    let id = InstanceId::new("inv-1").unwrap();
    let first = registry
        .register(
            ServiceDefinition::new("inventory", "localhost", 3001)
                .id(id.clone())
                .version("1.0.0"),
        )
        .await
        .unwrap();
    let second = registry
        .register(
            ServiceDefinition::new("inventory", "localhost", 3002)
                .id(id.clone())
                .version("1.1.0"),
        )
        .await
        .unwrap();
    assert_eq!(second.id(), &id);
    assert_eq!(second.registered_at(), first.registered_at());
    let found = registry.find_services(&Query::name("inventory"));
    assert_eq!(found, vec![second.clone()]);
    assert_eq!(found[0].port(), 3002);
    assert!(matches!(
        events.recv().await.unwrap(),
        Event::Registered {
            replaced: false,
            ..
        }
    ));
    assert!(matches!(
        events.recv().await.unwrap(),
        Event::Registered { replaced: true, .. }
    ));
    assert!(events.try_recv().unwrap().is_none());

    // Renaming moves it between name groups.
    registry
        .register(ServiceDefinition::new("stock", "localhost", 3002).id(id.clone()))
        .await
        .unwrap();
    assert!(registry.find_services(&Query::name("inventory")).is_empty());
    assert_eq!(registry.find_services(&Query::name("stock")).len(), 1);
    assert_eq!(registry.service_names(), ["stock"]);
}

#[tokio::test]
async fn bad_input_is_refused_with_the_field_and_nothing_changes() {
    let registry = registry().await;
    let mut events = registry.subscribe();
    for (def, field) in [
        (ServiceDefinition::new("", "localhost", 1), "name"),
        (ServiceDefinition::new("a/b", "localhost", 1), "name"),
        (ServiceDefinition::new("svc", "not a host", 1), "host"),
        (ServiceDefinition::new("svc", "localhost", 0), "port"),
        (
            ServiceDefinition::new("svc", "localhost", 1).version("1.x"),
            "version",
        ),
        (
            ServiceDefinition::new("svc", "localhost", 1).metadata("blob", "x".repeat(100_000)),
            "metadata",
        ),
    ] {
        match registry.register(def).await {
            Err(RegistryError::Invalid(e)) => assert_eq!(e.field(), field),
            other => panic!("expected an invalid {field}, got {other:?}"),
        }
    }
    assert!(registry.is_empty());
    assert!(events.try_recv().unwrap().is_none());
    let unknown = InstanceId::new("ghost").unwrap();
    assert!(
        matches!(registry.heartbeat(&unknown).await, Err(RegistryError::NotFound(id)) if id == unknown)
    );
    assert!(matches!(
        registry.set_health_status(&unknown, HealthStatus::Critical),
        Err(RegistryError::NotFound(_))
    ));
}

#[tokio::test]
async fn health_hook_drives_healthy_only_and_emits_once_per_transition() {
    let registry = registry().await;
    let instance = registry
        .register(ServiceDefinition::new("svc", "localhost", 1))
        .await
        .unwrap();
    let mut events = registry.subscribe();
    let healthy = Query::name("svc").healthy_only();
    assert_eq!(registry.find_services(&healthy).len(), 1);

    let id = instance.id();
    assert_eq!(
        registry
            .set_health_status(id, HealthStatus::Warning)
            .unwrap(),
        HealthStatus::Passing
    );
    assert_eq!(
        registry.find_services(&healthy).len(),
        1,
        "warning still serves"
    );
    assert_eq!(
        registry
            .set_health_status(id, HealthStatus::Critical)
            .unwrap(),
        HealthStatus::Warning
    );
    assert_eq!(
        registry
            .set_health_status(id, HealthStatus::Critical)
            .unwrap(),
        HealthStatus::Critical
    );
    assert_eq!(
        registry
            .set_health_status(id, HealthStatus::Unknown)
            .unwrap(),
        HealthStatus::Critical
    );
    assert!(registry.find_services(&healthy).is_empty());
    assert_eq!(registry.find_services(&Query::name("svc")).len(), 1);
    assert_eq!(
        registry
            .set_health_status(id, HealthStatus::Passing)
            .unwrap(),
        HealthStatus::Unknown
    );

    let names: Vec<_> = std::iter::from_fn(|| events.try_recv().unwrap())
        .map(|e| e.name())
        .collect();
    assert_eq!(names, ["service-unhealthy", "service-healthy"]);
}

#[tokio::test]
async fn slow_subscriber_lags_instead_of_blocking() {
    let registry = ServiceRegistry::builder()
        .event_capacity(8)
        .build()
        .await
        .unwrap();
    let mut slow = registry.subscribe();
    for port in 1..=20 {
        registry
            .register(ServiceDefinition::new("svc", "localhost", port))
            .await
            .unwrap();
    }
    assert_eq!(
        slow.recv().await.unwrap_err(),
        SubscriptionError::Lagged { missed: 12 }
    );
    // It can carry on, and resync from the registry.
    assert_eq!(slow.recv().await.unwrap().instance().unwrap().port(), 13);
    assert_eq!(registry.len(), 20);
}

#[tokio::test]
async fn heartbeat_moves_last_heartbeat_without_events() {
    let registry = registry().await;
    let instance = registry
        .register(ServiceDefinition::new("svc", "localhost", 1).ttl(Duration::from_secs(10)))
        .await
        .unwrap();
    let mut events = registry.subscribe();
    let before = instance.last_heartbeat();
    std::thread::sleep(Duration::from_millis(5)); // wall clock only: SystemTime must move
    registry.heartbeat(instance.id()).await.unwrap();
    assert!(
        instance.last_heartbeat() > before,
        "every snapshot sees the heartbeat"
    );
    assert!(events.try_recv().unwrap().is_none());
}
