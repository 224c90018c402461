//! Two registries on one etcd see each other.

use std::time::Duration;

use fluxor_registry::{DeregisterReason, Event, Query, ServiceDefinition};

use crate::etcd_support::{shared_endpoint, unique_prefix};
use crate::{id, inserted, next_change, next_event, registry, removed};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_registries_see_each_others_registrations_and_deregistrations() {
    let endpoint = shared_endpoint();
    let prefix = unique_prefix("two-registries");
    let a = registry(&endpoint, &prefix).await;
    let b = registry(&endpoint, &prefix).await;
    let mut b_sees = b.discover(Query::name("orders"));
    let mut b_events = b.subscribe();

    let one = a
        .register(
            ServiceDefinition::new("orders", "127.0.0.1", 7001)
                .id(id("orders-a1"))
                .tags(["core"])
                .metadata("zone", "z1")
                .ttl(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    let seen = inserted(next_change(&mut b_sees).await);
    assert_eq!(seen, one, "B sees A's instance as A registered it");
    assert_eq!(seen.metadata()["zone"], "z1");
    match next_event(&mut b_events).await {
        Event::Registered { instance, replaced } => {
            assert_eq!(instance.id(), one.id());
            assert!(!replaced);
        }
        other => panic!("expected registered, got {other:?}"),
    }
    // Reads are local: B's index has it.
    assert_eq!(
        b.find_services(&Query::name("orders").tag("core")),
        vec![one.clone()]
    );

    // A heartbeat is a lease keep-alive: nothing changes for B.
    a.heartbeat(one.id()).await.unwrap();

    // And the other way round, plus a deregistration.
    let mut a_sees = a.discover(Query::name("orders"));
    assert_eq!(inserted(next_change(&mut a_sees).await).id(), one.id());
    let two = b
        .register(ServiceDefinition::new("orders", "127.0.0.1", 7002).id(id("orders-b1")))
        .await
        .unwrap();
    assert_eq!(inserted(next_change(&mut a_sees).await), two);
    assert_eq!(
        inserted(next_change(&mut b_sees).await),
        two,
        "B's own stream"
    );
    b.deregister(two.id()).await.unwrap();
    assert_eq!(removed(next_change(&mut a_sees).await), *two.id());
    assert_eq!(removed(next_change(&mut b_sees).await), *two.id());
    a.deregister(one.id()).await.unwrap();
    assert_eq!(removed(next_change(&mut b_sees).await), *one.id());

    // B's events: its own registration and deregistration of `two`, and A's
    // deregistration of `one`, each once (the heartbeat and the echoes of
    // B's own writes published nothing).
    let mut names = Vec::new();
    for _ in 0..3 {
        names.push(crate::describe_event(&next_event(&mut b_events).await));
    }
    assert_eq!(
        names,
        [
            "service-registered orders-b1",
            "service-deregistered orders-b1",
            "service-deregistered orders-a1",
        ]
    );
    assert!(b_events.try_recv().unwrap().is_none(), "no duplicate event");
    assert!(a.is_empty() && b.is_empty());
    assert!(a.backend_status().stale_since.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_built_later_starts_from_a_full_read() {
    let endpoint = shared_endpoint();
    let prefix = unique_prefix("late");
    let a = registry(&endpoint, &prefix).await;
    for port in 1..=3u16 {
        a.register(ServiceDefinition::new("late", "127.0.0.1", port))
            .await
            .unwrap();
    }
    let b = registry(&endpoint, &prefix).await;
    assert_eq!(b.get_all_services(), a.get_all_services());
    assert_eq!(b.recovery_report().instances, 3);
    assert!(b.recovery_report().is_clean());

    // An expiry of an own instance, owned by its lease.
    let mut b_events = b.subscribe();
    let short = a
        .register(ServiceDefinition::new("late", "127.0.0.1", 9).ttl(Duration::from_secs(1)))
        .await
        .unwrap();
    assert!(matches!(
        next_event(&mut b_events).await,
        Event::Registered { .. }
    ));
    let mut a_events = a.subscribe();
    match next_event(&mut a_events).await {
        Event::Deregistered { instance, reason } => {
            assert_eq!(instance.id(), short.id());
            assert_eq!(reason, DeregisterReason::Expired);
        }
        other => panic!("expected the expiry, got {other:?}"),
    }
    match next_event(&mut b_events).await {
        Event::Deregistered { instance, .. } => assert_eq!(instance.id(), short.id()),
        other => panic!("expected the expiry, got {other:?}"),
    }
    assert_eq!(a.len(), 3);
    assert_eq!(b.len(), 3);
}

/// The watch echoes this registry's own writes back to it, possibly after
/// the instance was already deregistered here: the echo must not bring it
/// back for a moment (an extra insert and remove, and events).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_echoes_of_own_writes_publish_nothing() {
    let endpoint = shared_endpoint();
    let prefix = unique_prefix("echoes");
    let b = registry(&endpoint, &prefix).await;
    let mut sees = b.discover(Query::name("quick"));
    let mut events = b.subscribe();
    let mut expected = Vec::new();
    for n in 0..20 {
        let name = format!("quick-{n}");
        b.register(ServiceDefinition::new("quick", "127.0.0.1", 1).id(id(&name)))
            .await
            .unwrap();
        b.deregister(&id(&name)).await.unwrap();
        expected.push(format!("insert {name} port 1"));
        expected.push(format!("remove {name}"));
    }
    // A write by another registry after all of B's: B's watch delivers it
    // after every echo of B's own writes.
    let other = registry(&endpoint, &prefix).await;
    assert!(other.is_empty(), "etcd holds none of them");
    other
        .register(ServiceDefinition::new("quick", "127.0.0.1", 2).id(id("sync")))
        .await
        .unwrap();
    let mut changes = Vec::new();
    loop {
        let text = crate::describe(&next_change(&mut sees).await);
        if text == "insert sync port 2" {
            break;
        }
        changes.push(text);
    }
    assert_eq!(changes, expected);
    let mut count = 0;
    while let Some(event) = events.try_recv().unwrap() {
        assert!(matches!(
            event,
            Event::Registered { .. } | Event::Deregistered { .. }
        ));
        count += 1;
    }
    assert_eq!(
        count,
        20 * 2 + 1,
        "one event per registration and deregistration"
    );
}
