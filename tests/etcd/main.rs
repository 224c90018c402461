//! Integration tests for the etcd backend, against a real etcd.
//!
//! Run through `scripts/test.sh`, which starts a throwaway etcd and exports
//! `FLUXOR_ETCD_ENDPOINTS` and `FLUXOR_ETCD_BIN`; without them these tests
//! fail and say so.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

#[path = "../support/mod.rs"]
mod support;

#[path = "../support/etcd.rs"]
mod etcd_support;

#[path = "../support/proxy.rs"]
mod proxy;

mod faults;
mod process;
mod schema;
mod shared;

use std::time::Duration;

use fluxor_registry::{
    EtcdOptions, Event, InstanceId, ServiceDiscover, ServiceInstance, ServiceRegistry, Subscription,
};
use futures_util::StreamExt;
use tower::discover::Change;

/// How long a change may take before the test fails. Generous: a failure
/// here means "never arrived", not "slow" (speed is measured in the bench).
const PATIENCE: Duration = Duration::from_secs(15);

/// A registry on `endpoint` under `prefix`, with short default leases.
async fn registry(endpoint: &str, prefix: &str) -> ServiceRegistry {
    // `RUST_LOG=fluxor_registry=debug` shows the backend's reconnections.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    ServiceRegistry::builder()
        .etcd_options(
            EtcdOptions::new([endpoint])
                .prefix(prefix)
                .default_lease_ttl(Duration::from_secs(2)),
        )
        .build()
        .await
        .unwrap()
}

async fn next_change(stream: &mut ServiceDiscover) -> Change<InstanceId, ServiceInstance> {
    match tokio::time::timeout(PATIENCE, stream.next()).await {
        Ok(Some(Ok(change))) => change,
        Ok(other) => panic!("discover stream ended: {other:?}"),
        Err(_) => panic!("no change within {PATIENCE:?}"),
    }
}

async fn next_event(events: &mut Subscription) -> Event {
    match tokio::time::timeout(PATIENCE, events.recv()).await {
        Ok(Ok(event)) => event,
        Ok(Err(e)) => panic!("subscription failed: {e}"),
        Err(_) => panic!("no event within {PATIENCE:?}"),
    }
}

#[track_caller]
fn inserted(change: Change<InstanceId, ServiceInstance>) -> ServiceInstance {
    match change {
        Change::Insert(id, instance) => {
            assert_eq!(&id, instance.id());
            instance
        }
        Change::Remove(id) => panic!("expected an insert, got a remove of {id}"),
    }
}

#[track_caller]
fn removed(change: Change<InstanceId, ServiceInstance>) -> InstanceId {
    match change {
        Change::Remove(id) => id,
        Change::Insert(id, _) => panic!("expected a remove, got an insert of {id}"),
    }
}

/// A short description of a change, for comparing sequences.
fn describe(change: &Change<InstanceId, ServiceInstance>) -> String {
    match change {
        Change::Insert(id, i) => format!("insert {id} port {}", i.port()),
        Change::Remove(id) => format!("remove {id}"),
    }
}

/// A short description of an event, for comparing sequences.
fn describe_event(event: &Event) -> String {
    match event.instance() {
        Some(i) => format!("{} {}", event.name(), i.id()),
        None => event.name().to_owned(),
    }
}

/// Polls `cond` (a registry's local state, no network) until it holds.
/// The state changes in a background task that offers nothing to await.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn id(s: &str) -> InstanceId {
    InstanceId::new(s).unwrap()
}
