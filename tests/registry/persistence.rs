use std::time::Duration;

use fluxor_registry::registry::FileOptions;
use fluxor_registry::{
    BackendError, InstanceId, Query, RegistryError, ServiceDefinition, ServiceRegistry,
};
use serde_json::json;

async fn open(path: &std::path::Path) -> Result<ServiceRegistry, RegistryError> {
    ServiceRegistry::builder().persistence(path).build().await
}

#[tokio::test]
async fn registrations_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/registry.db");
    let registry = open(&path).await.unwrap();
    assert_eq!(registry.backend_name(), "file");
    let a = registry
        .register(
            ServiceDefinition::new("inventory", "localhost", 3001)
                .version("1.0.0")
                .tags(["core"])
                .metadata("capabilities", json!(["read", "write"]))
                .weight(7),
        )
        .await
        .unwrap();
    let b = registry
        .register(ServiceDefinition::new("inventory", "localhost", 3002))
        .await
        .unwrap();
    let c = registry
        .register(ServiceDefinition::new("billing", "localhost", 4000).ttl(Duration::from_secs(30)))
        .await
        .unwrap();
    registry.deregister(b.id()).await.unwrap();
    drop(registry);

    let registry = open(&path).await.unwrap();
    assert!(registry.recovery_report().is_clean());
    assert_eq!(registry.recovery_report().instances, 2);
    let mut all = registry.get_all_services();
    all.sort_by_key(|i| i.port());
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].definition(), a.definition());
    assert_eq!(all[0].registered_at(), a.registered_at());
    assert_eq!(all[1].id(), c.id());
    assert_eq!(all[1].ttl(), Some(Duration::from_secs(30)));
    assert_eq!(
        registry
            .find_services(&Query::name("inventory").version("^1").unwrap())
            .len(),
        1
    );
}

#[tokio::test]
async fn a_second_registry_on_the_same_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    let first = open(&path).await.unwrap();
    match open(&path).await {
        Err(RegistryError::Backend(BackendError::Locked { path: p })) => assert_eq!(p, path),
        other => panic!("expected a lock error, got {other:?}"),
    }
    drop(first);
    open(&path).await.unwrap();
}

#[tokio::test]
async fn a_truncated_file_recovers_every_complete_record_and_says_what_it_cut() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    let registry = open(&path).await.unwrap();
    let mut ids = Vec::new();
    for port in 1..=5 {
        let i = registry
            .register(ServiceDefinition::new("svc", "localhost", port))
            .await
            .unwrap();
        ids.push(i.id().clone());
    }
    drop(registry);
    let full = std::fs::read(&path).unwrap();
    // Cut 10 bytes into the last record.
    std::fs::write(&path, &full[..full.len() - 10]).unwrap();

    let registry = open(&path).await.unwrap();
    let report = registry.recovery_report().clone();
    assert!(!report.is_clean());
    assert!(report.truncated_bytes > 0);
    assert_eq!(report.instances, 4);
    assert_eq!(report.path.as_deref(), Some(path.as_path()));
    let mut have: Vec<InstanceId> = registry
        .get_all_services()
        .iter()
        .map(|i| i.id().clone())
        .collect();
    have.sort();
    let mut want = ids[..4].to_vec();
    want.sort();
    assert_eq!(have, want);

    // The file was repaired: the next open is clean, and appends work.
    registry
        .register(ServiceDefinition::new("svc", "localhost", 99))
        .await
        .unwrap();
    drop(registry);
    let registry = open(&path).await.unwrap();
    assert!(registry.recovery_report().is_clean());
    assert_eq!(registry.len(), 5);
}

#[tokio::test]
async fn a_flipped_byte_drops_one_record_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    let registry = open(&path).await.unwrap();
    for port in 1..=3 {
        registry
            .register(ServiceDefinition::new("svc", "localhost", port))
            .await
            .unwrap();
    }
    drop(registry);
    let mut bytes = std::fs::read(&path).unwrap();
    let second = bytes
        .windows(b"\"port\":2".len())
        .position(|w| w == b"\"port\":2")
        .expect("second record");
    bytes[second + 7] = b'7'; // port 2 -> 7, checksum now wrong
    std::fs::write(&path, &bytes).unwrap();

    let registry = open(&path).await.unwrap();
    let report = registry.recovery_report();
    assert_eq!(report.dropped.len(), 1, "{report}");
    assert_eq!(report.dropped[0].reason, "checksum mismatch");
    let mut ports: Vec<u16> = registry
        .get_all_services()
        .iter()
        .map(|i| i.port())
        .collect();
    ports.sort();
    assert_eq!(ports, [1, 3]);
}

#[tokio::test]
async fn garbage_is_refused_naming_file_and_offset_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    std::fs::write(&path, b"{\"this is\": \"not a registry log\"}").unwrap();
    let err = open(&path).await.unwrap_err();
    match &err {
        RegistryError::Backend(BackendError::Corrupt {
            path: p, offset, ..
        }) => {
            assert_eq!(p, &path);
            assert_eq!(*offset, 0);
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"{\"this is\": \"not a registry log\"}"
    );
}

#[tokio::test]
async fn lost_framing_mid_file_is_refused_at_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    let registry = open(&path).await.unwrap();
    registry
        .register(ServiceDefinition::new("svc", "localhost", 1))
        .await
        .unwrap();
    drop(registry);
    let mut bytes = std::fs::read(&path).unwrap();
    let offset = bytes.len() as u64;
    bytes.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    std::fs::write(&path, &bytes).unwrap();
    match open(&path).await {
        Err(RegistryError::Backend(BackendError::Corrupt {
            offset: at, reason, ..
        })) => {
            assert_eq!(at, offset);
            assert!(reason.contains("length"), "{reason}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[tokio::test]
async fn compaction_keeps_the_live_set_and_shrinks_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    let options = FileOptions::default().compact_min_bytes(16 * 1024);
    let registry = ServiceRegistry::builder()
        .persistence_with(&path, options.clone())
        .build()
        .await
        .unwrap();
    let keep = registry
        .register(ServiceDefinition::new("keep", "localhost", 1))
        .await
        .unwrap();
    let id = InstanceId::new("churn-1").unwrap();
    for port in 1..=500 {
        registry
            .register(ServiceDefinition::new("churn", "localhost", port).id(id.clone()))
            .await
            .unwrap();
    }
    registry.deregister(&id).await.unwrap();
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(
        size < 32 * 1024,
        "500 updates of one instance compacted down, file is {size} bytes"
    );
    drop(registry);
    let registry = ServiceRegistry::builder()
        .persistence_with(&path, options)
        .build()
        .await
        .unwrap();
    assert!(registry.recovery_report().is_clean());
    assert_eq!(
        registry.get_all_services(),
        vec![registry.get_service(keep.id()).unwrap()]
    );
    assert_eq!(
        registry.get_all_services()[0].definition(),
        keep.definition()
    );
}
