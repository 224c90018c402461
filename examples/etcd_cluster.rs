//! Run with (needs a running etcd; `scripts/test.sh` starts one and runs this):
//!
//! ```not_rust
//! FLUXOR_ETCD_ENDPOINTS=http://127.0.0.1:2379 cargo run --features etcd --example etcd_cluster
//! ```
//!
//! Two registries — think two machines — share one service list through
//! etcd: one registers inventory instances, the other discovers them through
//! its local cache and follows the changes as a `tower` discover stream.

use std::time::Duration;

use fluxor_registry::{Query, ServiceDefinition, ServiceRegistry};
use futures_util::StreamExt;
use tower::discover::Change;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoints = std::env::var("FLUXOR_ETCD_ENDPOINTS").map_err(|_| {
        "set FLUXOR_ETCD_ENDPOINTS to an etcd endpoint (e.g. http://127.0.0.1:2379), \
         or run scripts/test.sh, which starts an etcd and runs this example"
    })?;
    let endpoints: Vec<String> = endpoints.split(',').map(str::to_owned).collect();
    // A prefix of our own, so running the example twice starts clean.
    let prefix = format!("/fluxor-example/{}", std::process::id());

    // "Machine" one: the inventory service registers its instances.
    let provider = ServiceRegistry::builder()
        .etcd(endpoints.clone())
        .prefix(&prefix)
        .build()
        .await?;
    // "Machine" two: a client that only discovers.
    let consumer = ServiceRegistry::builder()
        .etcd(endpoints)
        .prefix(&prefix)
        .build()
        .await?;
    let mut inventory = consumer.discover(Query::name("inventory-service"));

    let mut registered = Vec::new();
    for port in [3001, 3002] {
        let instance = provider
            .register(
                ServiceDefinition::new("inventory-service", "127.0.0.1", port)
                    .version("1.0.0")
                    .tags(["inventory", "core"])
                    .metadata("region", "us-east-1")
                    // A lease of 5 s that heartbeats keep alive.
                    .ttl(Duration::from_secs(5)),
            )
            .await?;
        println!(
            "provider registered {} at {}",
            instance.id(),
            instance.base_url()
        );
        registered.push(instance);
    }

    for _ in 0..2 {
        match tokio::time::timeout(Duration::from_secs(5), inventory.next()).await? {
            Some(Ok(Change::Insert(id, instance))) => {
                println!("consumer discovered {id} at {}", instance.base_url());
            }
            other => return Err(format!("unexpected {other:?}").into()),
        }
    }
    let cached = consumer.find_services(&Query::name("inventory-service").tag("core"));
    println!(
        "consumer cache holds {} instances (no network round trip)",
        cached.len()
    );
    assert_eq!(cached.len(), 2);

    provider.heartbeat(registered[0].id()).await?;
    provider.deregister(registered[1].id()).await?;
    match tokio::time::timeout(Duration::from_secs(5), inventory.next()).await? {
        Some(Ok(Change::Remove(id))) => println!("consumer saw {id} leave"),
        other => return Err(format!("unexpected {other:?}").into()),
    }
    provider.deregister(registered[0].id()).await?;
    println!("status: {:?}", consumer.backend_status());
    Ok(())
}
