//! The documented key schema, from outside: `etcdctl put` registers, and
//! malformed values are reported and skipped.

use fluxor_registry::{HealthStatus, Protocol, Query, ServiceDefinition};

use crate::etcd_support::{etcdctl, shared_endpoint, unique_prefix};
use crate::{id, inserted, next_change, registry, removed};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_written_by_etcdctl_is_discovered_and_ours_are_readable() {
    let endpoint = shared_endpoint();
    let prefix = unique_prefix("etcdctl");
    let registry = registry(&endpoint, &prefix).await;
    let mut sees = registry.discover(Query::name("web"));

    let key = format!("{prefix}/services/web/web-py-1");
    etcdctl(
        &endpoint,
        &[
            "put",
            &key,
            r#"{"host":"127.0.0.1","port":9000,"protocol":"https","tags":["python"],"metadata":{"zone":"z2"}}"#,
        ],
    );
    let found = inserted(next_change(&mut sees).await);
    assert_eq!(found.id(), &id("web-py-1"));
    assert_eq!(found.name(), "web");
    assert_eq!(found.port(), 9000);
    assert_eq!(found.protocol(), Protocol::Https);
    assert!(found.has_tag("python"));
    assert_eq!(found.metadata()["zone"], "z2");

    etcdctl(&endpoint, &["del", &key]);
    assert_eq!(removed(next_change(&mut sees).await), id("web-py-1"));

    // What we write is readable the same way.
    let ours = registry
        .register(ServiceDefinition::new("web", "127.0.0.1", 9001).id(id("web-rs-1")))
        .await
        .unwrap();
    let out = etcdctl(
        &endpoint,
        &[
            "get",
            "--print-value-only",
            &format!("{prefix}/services/web/web-rs-1"),
        ],
    );
    let json: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(json["id"], "web-rs-1");
    assert_eq!(json["name"], "web");
    assert_eq!(json["host"], "127.0.0.1");
    assert_eq!(json["port"], 9001);
    assert_eq!(json["health"], HealthStatus::default().as_str());
    assert!(json["registered_at_ms"].as_u64().unwrap() > 0);
    assert_eq!(inserted(next_change(&mut sees).await), ours);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_values_are_reported_and_skipped() {
    let endpoint = shared_endpoint();
    let prefix = unique_prefix("malformed");
    // One there before the registry starts…
    etcdctl(
        &endpoint,
        &["put", &format!("{prefix}/services/bad/b1"), "not json"],
    );
    etcdctl(
        &endpoint,
        &[
            "put",
            &format!("{prefix}/services/bad/b2"),
            r#"{"host":"127.0.0.1","port":1}"#,
        ],
    );
    let registry = registry(&endpoint, &prefix).await;
    let report = registry.recovery_report();
    assert_eq!(report.records_read, 2);
    assert_eq!(report.instances, 1);
    assert_eq!(report.dropped.len(), 1);
    assert!(
        report.dropped[0].reason.contains("services/bad/b1"),
        "{report:?}"
    );
    assert!(report.dropped[0].reason.contains("not JSON"), "{report:?}");
    assert_eq!(registry.backend_status().rejected, 1);

    // …and some while it runs: a key whose id disagrees with its value, a
    // port 0, and a key outside the schema. Then a good one.
    let mut sees = registry.discover(Query::any());
    assert_eq!(inserted(next_change(&mut sees).await).id(), &id("b2"));
    etcdctl(
        &endpoint,
        &[
            "put",
            &format!("{prefix}/services/bad/b3"),
            r#"{"host":"h","port":1,"id":"zz"}"#,
        ],
    );
    etcdctl(
        &endpoint,
        &[
            "put",
            &format!("{prefix}/services/bad/b4"),
            r#"{"host":"h","port":0}"#,
        ],
    );
    etcdctl(
        &endpoint,
        &["put", &format!("{prefix}/services/nameonly"), "{}"],
    );
    // b2 turns malformed: it leaves.
    etcdctl(
        &endpoint,
        &["put", &format!("{prefix}/services/bad/b2"), "[]"],
    );
    assert_eq!(removed(next_change(&mut sees).await), id("b2"));
    etcdctl(
        &endpoint,
        &[
            "put",
            &format!("{prefix}/services/good/g1"),
            r#"{"host":"127.0.0.1","port":2}"#,
        ],
    );
    // Changes arrive in revision order: once g1 is here, all four bad ones
    // were handled before it.
    assert_eq!(inserted(next_change(&mut sees).await).id(), &id("g1"));
    let status = registry.backend_status();
    assert_eq!(status.rejected, 5, "{status:?}");
    assert!(
        status
            .last_rejected
            .as_deref()
            .unwrap()
            .contains("services/bad/b2"),
        "{status:?}"
    );
    assert_eq!(registry.len(), 1);
    assert!(status.stale_since.is_none());
}
