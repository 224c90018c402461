//! The main job: a service registry on the embedded default, end to end.
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! Registers instances of two services, queries them by tag and version,
//! follows the discover stream, lets one instance's TTL expire (no
//! heartbeat) while another is kept alive by heartbeats, and prints every
//! event. Exits 0 in about two seconds.

use std::time::Duration;

use fluxor_registry::{
    DeregisterReason, Event, Protocol, Query, ServiceDefinition, ServiceRegistry,
};
use futures_util::StreamExt;
use serde_json::json;
use tower::discover::Change;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let registry = ServiceRegistry::builder().build().await?;

    // Every event, as it happens.
    let mut events = registry.subscribe();
    let printer = tokio::spawn(async move {
        let mut expired = 0;
        while let Ok(event) = events.recv().await {
            let detail = match &event {
                Event::Deregistered { reason, .. } => format!(" ({reason})"),
                _ => String::new(),
            };
            println!("  event {:<22} {}{detail}", event.name(), event.key());
            if matches!(
                event,
                Event::Deregistered {
                    reason: DeregisterReason::Expired,
                    ..
                }
            ) {
                expired += 1;
                if expired == 1 {
                    return expired;
                }
            }
        }
        expired
    });

    // Follow inventory 1.x as a tower Discover stream.
    let mut inventory_v1 = registry.discover(Query::name("inventory-service").version("^1")?);
    let watcher = tokio::spawn(async move {
        while let Some(Ok(change)) = inventory_v1.next().await {
            match change {
                Change::Insert(id, instance) => {
                    println!("  discover + {id} at {}", instance.base_url())
                }
                Change::Remove(id) => println!("  discover - {id}"),
            }
        }
    });

    println!("registering");
    let definition = |port: u16, version: &str| {
        ServiceDefinition::new("inventory-service", "127.0.0.1", port)
            .version(version)
            .protocol(Protocol::Http)
            .tags(["inventory", "core"])
            .metadata("region", "us-east-1")
            .metadata("capabilities", json!(["read", "write"]))
    };
    let kept = registry
        .register(definition(3001, "1.0.0").ttl(Duration::from_millis(800)))
        .await?;
    let silent = registry
        .register(definition(3002, "1.1.0").ttl(Duration::from_millis(800)))
        .await?;
    registry
        .register(definition(3003, "2.0.0").tag("canary"))
        .await?;
    for port in [4001, 4002] {
        registry
            .register(
                ServiceDefinition::new("billing-service", "127.0.0.1", port)
                    .version("3.2.0")
                    .tag("core"),
            )
            .await?;
    }

    println!("querying");
    let show = |label: &str, query: &Query| {
        let found = registry.find_services(query);
        let ports: Vec<u16> = found.iter().map(|i| i.port()).collect();
        println!("  {label:<36} {ports:?}");
        found.len()
    };
    let core = show("tag core (every service)", &Query::any().tag("core"));
    let v1 = show(
        "inventory-service ^1",
        &Query::name("inventory-service").version("^1")?,
    );
    let canary = show(
        "inventory-service tag canary",
        &Query::name("inventory-service").tag("canary"),
    );
    show(
        "billing-service >=3, healthy only",
        &Query::name("billing-service")
            .version(">=3")?
            .healthy_only(),
    );
    assert_eq!((core, v1, canary), (5, 2, 1), "unexpected query results");

    println!(
        "heartbeating {} and letting {} expire",
        kept.id(),
        silent.id()
    );
    let mut beats = tokio::time::interval(Duration::from_millis(200));
    let expired = tokio::time::timeout(Duration::from_secs(5), async {
        let mut printer = printer;
        loop {
            tokio::select! {
                done = &mut printer => return done.unwrap_or(0),
                _ = beats.tick() => registry.heartbeat(kept.id()).await.map(|_| ()).unwrap_or(()),
            }
        }
    })
    .await?;

    let left = registry.find_services(&Query::name("inventory-service"));
    println!(
        "done: {expired} expired, {} inventory instances left, {} in all",
        left.len(),
        registry.len()
    );
    if expired != 1
        || registry.get_service(silent.id()).is_some()
        || registry.get_service(kept.id()).is_none()
    {
        return Err(
            "the silent instance should have expired and the heartbeating one stayed".into(),
        );
    }
    watcher.abort();
    Ok(())
}
