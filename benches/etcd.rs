//! How long does a registration take to reach another registry through etcd,
//! and what does a read cost when the registry is shared through etcd?
//!
//! `register_to_discover/{memory,etcd}`: one registry registers, another
//! (for etcd: a second client, as a second machine would be) yields the
//! insert on its discover stream. With the memory backend both sides are one
//! registry: the floor. Median and p99 over 500 samples are printed first.
//!
//! `read/find_services/{memory,etcd}` and `read/get_service/*`: a read of one
//! name of 10 instances among 1,000; etcd reads come from the local cache, so
//! the goal is the memory backend's cost (ratio ≈ 1).
//!
//! Needs an etcd at `FLUXOR_ETCD_ENDPOINTS` (`scripts/test.sh` starts one).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion};
use fluxor_registry::{InstanceId, Query, ServiceDefinition, ServiceDiscover, ServiceRegistry};
use futures_util::StreamExt;
use tower::discover::Change;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn endpoint() -> String {
    std::env::var("FLUXOR_ETCD_ENDPOINTS").unwrap_or_else(|_| {
        panic!("FLUXOR_ETCD_ENDPOINTS is not set: run the etcd bench through scripts/test.sh or with an etcd")
    })
}

async fn etcd_registry(prefix: &str) -> ServiceRegistry {
    ServiceRegistry::builder()
        .etcd([endpoint()])
        .prefix(prefix)
        .build()
        .await
        .expect("etcd registry")
}

/// A writer and a reader sharing a list, and the reader's stream.
struct Pair {
    writer: ServiceRegistry,
    reader: ServiceRegistry,
    stream: ServiceDiscover,
    next: u64,
}

impl Pair {
    async fn new(etcd: bool, tag: &str) -> Self {
        let (writer, reader) = if etcd {
            let prefix = format!("/fluxor-bench/{tag}-{}", std::process::id());
            (etcd_registry(&prefix).await, etcd_registry(&prefix).await)
        } else {
            let r = ServiceRegistry::builder().build().await.expect("memory");
            (r.clone(), r)
        };
        let stream = reader.discover(Query::name("latency"));
        Self {
            writer,
            reader,
            stream,
            next: 0,
        }
    }

    /// One register → discovered round, then the deregistration is consumed
    /// too (not timed), so every round starts from the same state.
    async fn round(&mut self) -> Duration {
        self.next += 1;
        let id = InstanceId::new(format!("latency-{}", self.next)).expect("id");
        let start = tokio::time::Instant::now();
        self.writer
            .register(ServiceDefinition::new("latency", "127.0.0.1", 1).id(id.clone()))
            .await
            .expect("register");
        loop {
            match self.stream.next().await {
                Some(Ok(Change::Insert(got, _))) if got == id => break,
                Some(Ok(_)) => continue,
                other => panic!("stream ended: {other:?}"),
            }
        }
        let elapsed = start.elapsed();
        self.writer.deregister(&id).await.expect("deregister");
        loop {
            match self.stream.next().await {
                Some(Ok(Change::Remove(got))) if got == id => break,
                Some(Ok(_)) => continue,
                other => panic!("stream ended: {other:?}"),
            }
        }
        black_box(&self.reader);
        elapsed
    }
}

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

/// Prints median and p99 register-to-discover latency, memory and etcd.
fn latency_percentiles(samples: usize) {
    let rt = runtime();
    let mut figures = Vec::new();
    for etcd in [false, true] {
        let (median, p99) = rt.block_on(async {
            let mut pair = Pair::new(etcd, "pct").await;
            for _ in 0..samples.min(20) {
                pair.round().await; // warm up
            }
            let mut all = Vec::with_capacity(samples);
            for _ in 0..samples {
                all.push(pair.round().await);
            }
            percentiles(all)
        });
        let name = if etcd { "etcd" } else { "memory" };
        println!("register_to_discover/{name}: median {median:?}, p99 {p99:?} ({samples} samples)");
        figures.push((median, p99));
    }
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    println!(
        "register_to_discover etcd/memory: median x{:.0}, p99 x{:.0}",
        ratio(figures[1].0, figures[0].0),
        ratio(figures[1].1, figures[0].1)
    );
}

fn register_to_discover(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("register_to_discover");
    for etcd in [false, true] {
        let mut pair = rt.block_on(Pair::new(etcd, "crit"));
        let name = if etcd { "etcd" } else { "memory" };
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += pair.round().await;
                    }
                    total
                })
            })
        });
    }
    group.finish();
}

fn reads(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("read");
    let prefix = format!("/fluxor-bench/read-{}", std::process::id());
    let memory = rt
        .block_on(ServiceRegistry::builder().build())
        .expect("memory");
    let etcd = rt.block_on(etcd_registry(&prefix));
    let reader = rt.block_on(etcd_registry(&prefix));
    rt.block_on(async {
        for i in 0..1000u16 {
            let def = ServiceDefinition::new(format!("service-{}", i / 10), "10.0.0.1", i + 1)
                .id(InstanceId::new(format!("i-{i}")).expect("id"))
                .tags(["core", "eu"]);
            memory.register(def.clone()).await.expect("register");
            etcd.register(def).await.expect("register");
        }
        // The reader fills its cache from the watch.
        while reader.len() < 1000 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let query = Query::name("service-50").tag("core");
    let id = InstanceId::new("i-500").expect("id");
    for (name, registry) in [("memory", &memory), ("etcd", &reader)] {
        assert_eq!(registry.find_services(&query).len(), 10);
        group.bench_with_input(BenchmarkId::new("find_services", name), &query, |b, q| {
            b.iter(|| black_box(registry.find_services(black_box(q))))
        });
        group.bench_with_input(BenchmarkId::new("get_service", name), &id, |b, id| {
            b.iter(|| black_box(registry.get_service(black_box(id))))
        });
    }
    group.finish();
    // Leave etcd as we found it.
    rt.block_on(async {
        for i in 0..1000u16 {
            let _ = etcd
                .deregister(&InstanceId::new(format!("i-{i}")).expect("id"))
                .await;
        }
    });
}

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    latency_percentiles(if bench_mode { 500 } else { 20 });
    let mut criterion = Criterion::default().configure_from_args();
    register_to_discover(&mut criterion);
    reads(&mut criterion);
    criterion.final_summary();
}
