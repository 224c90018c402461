use std::collections::HashSet;
use std::time::Duration;

use fluxor_registry::{
    HealthStatus, InstanceId, Query, ServiceDefinition, ServiceInstance, ServiceRegistry,
};
use futures_util::{FutureExt, StreamExt};
use tower::discover::Change;

type Stream = fluxor_registry::ServiceDiscover;

/// The next change, which must already be there.
fn next_now(stream: &mut Stream) -> Change<InstanceId, ServiceInstance> {
    match stream.next().now_or_never() {
        Some(Some(Ok(change))) => change,
        other => panic!("expected a ready change, got {other:?}"),
    }
}

fn assert_idle(stream: &mut Stream) {
    if let Some(item) = stream.next().now_or_never() {
        panic!("expected no change, got {item:?}");
    }
}

fn inserted(change: Change<InstanceId, ServiceInstance>) -> ServiceInstance {
    match change {
        Change::Insert(id, instance) => {
            assert_eq!(&id, instance.id());
            instance
        }
        Change::Remove(id) => panic!("expected an insert, got a remove of {id}"),
    }
}

fn removed(change: Change<InstanceId, ServiceInstance>) -> InstanceId {
    match change {
        Change::Remove(id) => id,
        Change::Insert(id, _) => panic!("expected a remove, got an insert of {id}"),
    }
}

#[tokio::test]
async fn snapshot_then_changes_that_affect_the_query() {
    let registry = ServiceRegistry::builder().build().await.unwrap();
    let a = registry
        .register(ServiceDefinition::new("web", "localhost", 1).version("1.0.0"))
        .await
        .unwrap();
    registry
        .register(ServiceDefinition::new("db", "localhost", 2))
        .await
        .unwrap();

    let mut web = registry.discover(Query::name("web").version("^1").unwrap().healthy_only());
    assert_eq!(inserted(next_now(&mut web)).id(), a.id());
    assert_idle(&mut web);

    // Not matching: other name, other version.
    registry
        .register(ServiceDefinition::new("db", "localhost", 3))
        .await
        .unwrap();
    let v2 = registry
        .register(ServiceDefinition::new("web", "localhost", 4).version("2.0.0"))
        .await
        .unwrap();
    assert_idle(&mut web);

    // Starts to match when updated to 1.x; stops when moved back.
    let v1 = registry
        .register(
            ServiceDefinition::new("web", "localhost", 4)
                .id(v2.id().clone())
                .version("1.5.0"),
        )
        .await
        .unwrap();
    assert_eq!(inserted(next_now(&mut web)), v1);
    registry
        .register(
            ServiceDefinition::new("web", "localhost", 4)
                .id(v2.id().clone())
                .version("3.0.0"),
        )
        .await
        .unwrap();
    assert_eq!(&removed(next_now(&mut web)), v2.id());

    // A definition change while matching is an insert that replaces.
    let moved = registry
        .register(
            ServiceDefinition::new("web", "localhost", 9)
                .id(a.id().clone())
                .version("1.0.1"),
        )
        .await
        .unwrap();
    assert_eq!(inserted(next_now(&mut web)).port(), moved.port());
    // Re-registering the same definition is no change.
    registry
        .register(
            ServiceDefinition::new("web", "localhost", 9)
                .id(a.id().clone())
                .version("1.0.1"),
        )
        .await
        .unwrap();
    assert_idle(&mut web);

    // Health: leaves a healthy_only query when critical, returns on recovery,
    // and warning <-> passing is no change.
    registry
        .set_health_status(a.id(), HealthStatus::Warning)
        .unwrap();
    assert_idle(&mut web);
    registry
        .set_health_status(a.id(), HealthStatus::Critical)
        .unwrap();
    assert_eq!(&removed(next_now(&mut web)), a.id());
    registry
        .set_health_status(a.id(), HealthStatus::Passing)
        .unwrap();
    assert_eq!(inserted(next_now(&mut web)).id(), a.id());

    registry.deregister(a.id()).await.unwrap();
    assert_eq!(&removed(next_now(&mut web)), a.id());
    assert_idle(&mut web);
}

#[tokio::test(start_paused = true)]
async fn expiry_is_a_remove() {
    let registry = ServiceRegistry::builder().build().await.unwrap();
    let mut all = registry.discover(Query::any());
    let a = registry
        .register(ServiceDefinition::new("web", "localhost", 1).ttl(Duration::from_secs(1)))
        .await
        .unwrap();
    assert_eq!(inserted(next_now(&mut all)).id(), a.id());
    tokio::time::advance(Duration::from_millis(1_001)).await;
    match all.next().await {
        Some(Ok(Change::Remove(id))) => assert_eq!(&id, a.id()),
        other => panic!("expected the expiry, got {other:?}"),
    }
}

#[tokio::test]
async fn a_stream_that_falls_behind_resyncs_to_the_exact_set() {
    let registry = ServiceRegistry::builder().build().await.unwrap();
    let keep = registry
        .register(ServiceDefinition::new("web", "localhost", 1))
        .await
        .unwrap();
    let drop_me = registry
        .register(ServiceDefinition::new("web", "localhost", 2))
        .await
        .unwrap();
    let mut web = registry.discover(Query::name("web"));
    let mut live: HashSet<InstanceId> = HashSet::new();
    let apply = |live: &mut HashSet<InstanceId>, change| match change {
        Change::Insert(id, _) => {
            live.insert(id);
        }
        Change::Remove(id) => assert!(live.remove(&id), "remove of {id} never inserted"),
    };
    apply(&mut live, next_now(&mut web));
    apply(&mut live, next_now(&mut web));

    // Far more writes than the change feed holds, none read meanwhile.
    registry.deregister(drop_me.id()).await.unwrap();
    let mut expected = HashSet::from([keep.id().clone()]);
    for i in 0..10_000u16 {
        let instance = registry
            .register(ServiceDefinition::new("web", "localhost", 1_000 + i))
            .await
            .unwrap();
        if i % 2 == 0 {
            registry.deregister(instance.id()).await.unwrap();
        } else {
            expected.insert(instance.id().clone());
        }
    }
    let mut inserts = 0;
    while let Some(Some(Ok(change))) = web.next().now_or_never() {
        if matches!(change, Change::Insert(..)) {
            inserts += 1;
        }
        apply(&mut live, change);
    }
    assert_eq!(live, expected);
    assert_eq!(inserts, 5_000, "only the differences after a resync");
}

#[tokio::test]
async fn the_stream_ends_when_the_registry_is_dropped() {
    let registry = ServiceRegistry::builder().build().await.unwrap();
    let mut web = registry.discover(Query::name("web"));
    assert_idle(&mut web);
    drop(registry);
    assert!(web.next().await.is_none());
}
