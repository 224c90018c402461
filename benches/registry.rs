//! What does a registry read cost as the registry grows, and how fast can
//! instances be registered, in memory and with persistence?
//!
//! `find_services/by_name/{100,100000}`: one name of 10 instances, with 100
//! or 100,000 instances registered in all (10 or 10,000 names). The goal is
//! a cost flat in the registry's size (within 2x).
//!
//! `register/*`: one registration; `register_concurrent/*`: 64 at once, where
//! the file backend's group commit shares fsyncs.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fluxor_registry::{Query, ServiceDefinition, ServiceRegistry};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn find_services(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("find_services/by_name");
    for total in [100usize, 100_000] {
        let registry = rt.block_on(async {
            let registry = ServiceRegistry::builder().build().await.expect("registry");
            for i in 0..total {
                let name = format!("service-{}", i / 10);
                let def = ServiceDefinition::new(name, "10.0.0.1", 1 + (i % 60_000) as u16)
                    .version("1.2.3")
                    .tags(["core", "eu"]);
                registry.register(def).await.expect("register");
            }
            registry
        });
        let query = Query::name(format!("service-{}", total / 20)).tag("core");
        group.bench_with_input(BenchmarkId::from_parameter(total), &query, |b, q| {
            b.iter(|| black_box(registry.find_services(black_box(q))))
        });
        let by_id = registry.get_all_services()[total / 2].id().clone();
        group.bench_with_input(BenchmarkId::new("get_service", total), &by_id, |b, id| {
            b.iter(|| black_box(registry.get_service(black_box(id))))
        });
    }
    group.finish();
}

fn register(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let memory = rt
        .block_on(ServiceRegistry::builder().build())
        .expect("memory");
    let file = rt
        .block_on(
            ServiceRegistry::builder()
                .persistence(dir.path().join("bench.db"))
                .build(),
        )
        .expect("file");
    let def = || {
        ServiceDefinition::new("bench", "127.0.0.1", 8080)
            .tags(["a", "b"])
            .version("1.0.0")
    };

    let mut group = c.benchmark_group("register");
    group.throughput(Throughput::Elements(1));
    for (name, registry) in [("memory", &memory), ("file", &file)] {
        group.bench_function(name, |b| {
            b.to_async(&rt)
                .iter(|| async { registry.register(def()).await.expect("register") })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("register_concurrent");
    group.throughput(Throughput::Elements(64));
    for (name, registry) in [("memory", &memory), ("file", &file)] {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let calls = (0..64).map(|_| {
                    let registry = registry.clone();
                    tokio::spawn(async move { registry.register(def()).await.expect("register") })
                });
                for call in calls.collect::<Vec<_>>() {
                    call.await.expect("join");
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, find_services, register);
criterion_main!(benches);
