//! etcd restarts, loses its data, compacts, freezes; leases get revoked.

use std::collections::BTreeSet;
use std::process::Command;

use fluxor_registry::{Query, ServiceDefinition, ServiceRegistry};

use crate::etcd_support::{EtcdProcess, etcdctl, shared_endpoint, unique_prefix};
use crate::proxy::Proxy;
use crate::{
    describe, describe_event, eventually, id, inserted, next_change, next_event, registry,
};

async fn register(registry: &ServiceRegistry, name: &str, id_: &str, port: u16) {
    registry
        .register(ServiceDefinition::new(name, "127.0.0.1", port).id(id(id_)))
        .await
        .unwrap();
}

/// The changes `stream` yields up to and including the insert of `marker`.
async fn changes_until(stream: &mut fluxor_registry::ServiceDiscover, marker: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let change = next_change(stream).await;
        let done = matches!(&change, tower::discover::Change::Insert(i, _) if i.as_str() == marker);
        if done {
            return seen;
        }
        seen.push(describe(&change));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_restart_resumes_watches_and_own_instances_come_back() {
    let mut etcd = EtcdProcess::start().await;
    let prefix = "/fluxor";
    let a = registry(&etcd.endpoint(), prefix).await;
    let b = registry(&etcd.endpoint(), prefix).await;
    register(&a, "svc", "a1", 1).await;
    register(&b, "svc", "b1", 2).await;
    let mut a_sees = a.discover(Query::any());
    let mut first = BTreeSet::new();
    first.insert(inserted(next_change(&mut a_sees).await).id().clone());
    first.insert(inserted(next_change(&mut a_sees).await).id().clone());
    assert_eq!(first, [id("a1"), id("b1")].into());
    let mut a_events = a.subscribe();
    let mut b_sees = b.discover(Query::any());

    etcd.kill().await;
    eventually("A notices the outage", || {
        a.backend_status().stale_since.is_some()
    })
    .await;
    // Reads keep serving the last known state.
    assert_eq!(a.len(), 2);
    assert_eq!(a.get_service(&id("b1")).unwrap().port(), 2);
    // A registration during the outage is applied here, reported as not
    // durable, and reaches etcd once it is back.
    let during = a
        .register(ServiceDefinition::new("svc", "127.0.0.1", 3).id(id("a2")))
        .await;
    assert!(during.is_err(), "the put cannot succeed while etcd is down");
    assert!(a.get_service(&id("a2")).is_some());

    etcd.restart(false).await;
    eventually("A follows etcd again", || {
        a.backend_status().stale_since.is_none()
    })
    .await;
    eventually("B sees A's outage registration", || {
        b.get_service(&id("a2")).is_some()
    })
    .await;
    register(&b, "svc", "marker", 9).await;

    // A's stream: its own a2 (applied locally during the outage), then the
    // marker; nothing replayed, nothing lost.
    assert_eq!(
        changes_until(&mut a_sees, "marker").await,
        ["insert a2 port 3"]
    );
    let mut names = Vec::new();
    for _ in 0..2 {
        names.push(describe_event(&next_event(&mut a_events).await));
    }
    assert_eq!(
        names,
        ["service-registered a2", "service-registered marker"]
    );
    assert!(a_events.try_recv().unwrap().is_none(), "no duplicate event");
    // B: the snapshot, then a2 and the marker, each once.
    let b_changes = changes_until(&mut b_sees, "marker").await;
    let mut b_changes: Vec<_> = b_changes.into_iter().collect();
    b_changes.sort();
    assert_eq!(
        b_changes,
        ["insert a1 port 1", "insert a2 port 3", "insert b1 port 2"]
    );
    assert_eq!(a.get_all_services(), b.get_all_services());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_that_lost_its_data_gets_our_instances_again() {
    let mut etcd = EtcdProcess::start().await;
    let a = registry(&etcd.endpoint(), "/fluxor").await;
    let b = registry(&etcd.endpoint(), "/fluxor").await;
    // Enough writes that the new store's revisions stay behind the old.
    for n in 0..5u16 {
        register(&a, "svc", &format!("a{n}"), n + 1).await;
    }
    register(&b, "svc", "b1", 100).await;
    eventually("A sees B", || a.len() == 6).await;
    let mut a_all = a.discover(Query::any());
    for _ in 0..6 {
        inserted(next_change(&mut a_all).await);
    }

    etcd.restart(true).await;
    let keys = || {
        etcdctl(
            &etcd.endpoint(),
            &["get", "--prefix", "--keys-only", "/fluxor/services/"],
        )
        .lines()
        .filter(|l| !l.is_empty())
        .count()
    };
    // Both processes put their own instances back under new leases.
    let deadline = tokio::time::Instant::now() + crate::PATIENCE;
    while keys() != 6 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "instances never came back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    register(&b, "svc", "marker", 9).await;
    let changes = changes_until(&mut a_all, "marker").await;
    // A's own instances never left A's view; B's may have, for the moment
    // between the wipe and B's re-registration (a real difference).
    assert!(
        changes.is_empty() || changes == ["remove b1", "insert b1 port 100"],
        "{changes:?}"
    );
    assert_eq!(a.len(), 7);
    assert_eq!(a.get_all_services(), b.get_all_services());
    assert!(a.backend_status().resyncs >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_lease_is_replaced_without_an_event_here() {
    let endpoint = shared_endpoint();
    let prefix = unique_prefix("revoked");
    let a = registry(&endpoint, &prefix).await;
    let b = registry(&endpoint, &prefix).await;
    register(&a, "svc", "a1", 1).await;
    let mut b_sees = b.discover(Query::any());
    assert_eq!(inserted(next_change(&mut b_sees).await).id(), &id("a1"));
    let mut a_sees = a.discover(Query::any());
    assert_eq!(inserted(next_change(&mut a_sees).await).id(), &id("a1"));
    let mut a_events = a.subscribe();

    let key = format!("{prefix}/services/svc/a1");
    let lease_of = || {
        let out = etcdctl(&endpoint, &["get", &key, "-w", "json"]);
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        json["kvs"][0]["lease"].as_i64()
    };
    let lease = lease_of().unwrap();
    etcdctl(&endpoint, &["lease", "revoke", &format!("{lease:x}")]);

    // Others see it leave and come back: that really happened in etcd.
    assert_eq!(crate::removed(next_change(&mut b_sees).await), id("a1"));
    assert_eq!(inserted(next_change(&mut b_sees).await).id(), &id("a1"));
    let new_lease = lease_of().unwrap();
    assert_ne!(new_lease, lease);

    // A never stopped having it.
    register(&b, "svc", "marker", 9).await;
    assert!(changes_until(&mut a_sees, "marker").await.is_empty());
    assert_eq!(
        describe_event(&next_event(&mut a_events).await),
        "service-registered marker"
    );
    assert!(a_events.try_recv().unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compaction_during_a_partition_forces_a_correct_resync() {
    let etcd = EtcdProcess::start().await;
    let addr = etcd
        .endpoint()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let proxy = Proxy::start(addr).await;
    let a = registry(&proxy.endpoint(), "/fluxor").await;
    let b = registry(&etcd.endpoint(), "/fluxor").await;
    register(&a, "svc", "a1", 1).await;
    register(&b, "svc", "old", 2).await;
    register(&b, "svc", "upd", 3).await;
    register(&b, "svc", "same", 4).await;
    let mut a_sees = a.discover(Query::any());
    eventually("A sees B's instances", || a.len() == 4).await;
    for _ in 0..4 {
        inserted(next_change(&mut a_sees).await);
    }
    let mut a_events = a.subscribe();

    proxy.cut();
    eventually("A notices the partition", || {
        a.backend_status().stale_since.is_some()
    })
    .await;
    register(&b, "svc", "new", 5).await;
    b.deregister(&id("old")).await.unwrap();
    register(&b, "svc", "upd", 30).await;
    register(&b, "svc", "ghost", 6).await;
    b.deregister(&id("ghost")).await.unwrap();
    let status = etcdctl(&etcd.endpoint(), &["endpoint", "status", "-w", "json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let revision = status[0]["Status"]["header"]["revision"].as_i64().unwrap();
    etcdctl(
        &etcd.endpoint(),
        &["compact", &revision.to_string(), "--physical"],
    );

    proxy.restore();
    eventually("A resynced", || a.backend_status().resyncs == 1).await;
    register(&b, "svc", "marker", 9).await;
    let mut changes = changes_until(&mut a_sees, "marker").await;
    changes.sort();
    // Exactly the differences: no ghost, nothing for a1 or `same`.
    assert_eq!(
        changes,
        ["insert new port 5", "insert upd port 30", "remove old"]
    );
    let mut names = Vec::new();
    for _ in 0..4 {
        names.push(describe_event(&next_event(&mut a_events).await));
    }
    names.sort();
    assert_eq!(
        names,
        [
            "service-deregistered old",
            "service-registered marker",
            "service-registered new",
            "service-registered upd",
        ]
    );
    assert!(a_events.try_recv().unwrap().is_none(), "no duplicate event");
    assert_eq!(a.get_all_services(), b.get_all_services());
    assert!(a.backend_status().stale_since.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_etcd_is_noticed_through_http2_keep_alive() {
    let etcd = EtcdProcess::start().await;
    let a = registry(&etcd.endpoint(), "/fluxor").await;
    let b = registry(&etcd.endpoint(), "/fluxor").await;
    let mut a_sees = a.discover(Query::any());
    let pid = etcd.pid().to_string();
    let signal = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid}");
    };
    signal("-STOP");
    // A frozen peer accepts TCP but answers nothing: only HTTP/2 pings
    // going unanswered reveal it.
    eventually("A notices the frozen etcd", || {
        a.backend_status().stale_since.is_some()
    })
    .await;
    signal("-CONT");
    eventually("A follows etcd again", || {
        a.backend_status().stale_since.is_none()
    })
    .await;
    register(&b, "svc", "marker", 9).await;
    assert!(changes_until(&mut a_sees, "marker").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_own_instance_that_stops_heartbeating_during_an_outage_expires() {
    let mut etcd = EtcdProcess::start().await;
    let a = registry(&etcd.endpoint(), "/fluxor").await;
    let kept = a
        .register(
            ServiceDefinition::new("svc", "127.0.0.1", 1)
                .id(id("kept"))
                .ttl(std::time::Duration::from_secs(1)),
        )
        .await
        .unwrap();
    let mut events = a.subscribe();
    etcd.kill().await;
    // Registered during the outage (not durable), then never heartbeated.
    let during = a
        .register(
            ServiceDefinition::new("svc", "127.0.0.1", 2)
                .id(id("silent"))
                .ttl(std::time::Duration::from_secs(1)),
        )
        .await;
    assert!(during.is_err());
    assert_eq!(
        describe_event(&next_event(&mut events).await),
        "service-registered silent"
    );
    // `kept` is heartbeaten throughout (the heartbeats fail while etcd is
    // down); `silent` is not.
    let beat = {
        let a = a.clone();
        let id = kept.id().clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
            loop {
                tick.tick().await;
                let _ = a.heartbeat(&id).await;
            }
        })
    };
    match next_event(&mut events).await {
        fluxor_registry::Event::Deregistered { instance, reason } => {
            assert_eq!(instance.id(), &id("silent"));
            assert_eq!(reason, fluxor_registry::DeregisterReason::Expired);
        }
        other => panic!("expected the expiry of `silent`, got {other:?}"),
    }
    etcd.restart(false).await;
    let b = registry(&etcd.endpoint(), "/fluxor").await;
    // `kept` is there; `silent` never reached etcd.
    assert_eq!(
        b.get_all_services()
            .iter()
            .map(|i| i.id().as_str())
            .collect::<Vec<_>>(),
        ["kept"]
    );
    beat.abort();
    assert!(a.get_service(&id("silent")).is_none());
    assert!(a.get_service(&id("kept")).is_some());
}
