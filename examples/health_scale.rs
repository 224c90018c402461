//! Measured run: 5,000 instances with HTTP checks at a 1 s interval.
//!
//! ```text
//! cargo run --release --example health_scale            # 5,000 instances, 15 s per side
//! cargo run --release --example health_scale -- 500 3   # smaller, for a smoke run
//! ```
//!
//! The HTTP servers run in a child process (this binary with `--serve`), so
//! the CPU figures of this process are the checker's alone. Two sides run
//! one after the other against the same servers:
//!
//! * `HealthChecker`: one scheduler task, a timer queue and a semaphore;
//! * a baseline: one tokio task per instance with its own
//!   `tokio::time::interval`, sharing the same kind of hyper client.
//!
//! For each: CPU share of one core (user + system, from `/proc`), checks per
//! second, and how late checks started against their schedule.

use std::convert::Infallible;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fluxor_registry::{
    CheckSpec, HealthChecker, HealthCheckerConfig, HealthConfig, Query, ServiceDefinition,
    ServiceRegistry,
};
use http_body_util::{BodyExt, Empty, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::time::Instant;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const SERVERS: usize = 4;

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--serve") {
        return serve();
    }
    let instances: usize = args.get(1).map(|a| a.parse()).transpose()?.unwrap_or(5_000);
    let seconds: u64 = args.get(2).map(|a| a.parse()).transpose()?.unwrap_or(15);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(measure(instances, Duration::from_secs(seconds)))
}

/// Child mode: `SERVERS` HTTP servers on 127.0.0.1; prints their ports,
/// serves until stdin closes.
fn serve() -> Result<(), BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut ports = Vec::new();
        for _ in 0..SERVERS {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            ports.push(listener.local_addr()?.port().to_string());
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(async move {
                        let svc = service_fn(|_req: Request<hyper::body::Incoming>| async {
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                        });
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
        }
        println!("{}", ports.join(" "));
        std::io::stdout().flush()?;
        // Serve until the parent closes our stdin.
        tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            while std::io::stdin()
                .read_line(&mut line)
                .map(|n| n > 0)
                .unwrap_or(false)
            {}
        })
        .await?;
        Ok(())
    })
}

/// CPU time of a process (user + system), from `/proc/<pid>/stat`.
fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // Fields 14 and 15 of the file (utime, stime) in USER_HZ (100 Hz).
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    Duration::from_millis(ticks * 10)
}

struct Side {
    name: &'static str,
    cpu: f64,
    server_cpu: f64,
    checks_per_sec: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

async fn measure(instances: usize, window: Duration) -> Result<(), BoxError> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let server_pid = child.id().to_string();
    let mut line = String::new();
    BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
    let ports: Vec<u16> = line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    println!(
        "{instances} instances, HTTP check every 1 s, {} servers in child process {server_pid}, {} s windows",
        ports.len(),
        window.as_secs()
    );

    let checker = run_checker(instances, &ports, window, &server_pid).await?;
    let baseline = run_baseline(instances, &ports, window, &server_pid).await?;

    println!();
    println!("| side | CPU (one core) | server CPU | checks/s | lateness p50 | p99 | max |");
    println!("|---|---|---|---|---|---|---|");
    for s in [&checker, &baseline] {
        println!(
            "| {} | {:.1} % | {:.1} % | {:.0} | {:?} | {:?} | {:?} |",
            s.name,
            s.cpu * 100.0,
            s.server_cpu * 100.0,
            s.checks_per_sec,
            s.p50,
            s.p99,
            s.max
        );
    }
    println!(
        "CPU ratio HealthChecker / task-per-instance: {:.2}",
        checker.cpu / baseline.cpu.max(f64::EPSILON)
    );
    drop(child.stdin.take());
    let _ = child.wait();
    Ok(())
}

async fn run_checker(
    instances: usize,
    ports: &[u16],
    window: Duration,
    server_pid: &str,
) -> Result<Side, BoxError> {
    let registry = ServiceRegistry::builder().build().await?;
    let checker = HealthChecker::new(
        registry.clone(),
        HealthCheckerConfig {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            max_concurrency: 128,
            jitter: 1.0,
            seed: Some(1),
            ..Default::default()
        },
    );
    for i in 0..instances {
        let port = ports[i % ports.len()];
        let instance = registry
            .register(
                ServiceDefinition::new("scale", "127.0.0.1", port)
                    .id(format!("scale-{i}").parse()?),
            )
            .await?;
        checker.start_health_checks(
            &instance,
            HealthConfig {
                checks: vec![CheckSpec::http("/health")],
                ..Default::default()
            },
        )?;
    }
    // Warm up: every instance passes its first check.
    let healthy = Query::name("scale").healthy_only();
    let start = Instant::now();
    while registry.find_services(&healthy).len() < instances {
        if start.elapsed() > Duration::from_secs(30) {
            return Err("instances did not all turn healthy within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    checker.reset_stats();
    let before = checker.stats();
    let (cpu0, srv0, t0) = (cpu_time("self"), cpu_time(server_pid), Instant::now());
    tokio::time::sleep(window).await;
    let (cpu1, srv1, elapsed) = (cpu_time("self"), cpu_time(server_pid), t0.elapsed());
    let after = checker.stats();
    let healthy_now = registry.find_services(&healthy).len();
    println!(
        "HealthChecker: {healthy_now}/{instances} healthy at the end, {} runs in the window",
        after.completed - before.completed
    );
    let secs = elapsed.as_secs_f64();
    Ok(Side {
        name: "HealthChecker (1 scheduler task, 128 permits)",
        cpu: (cpu1 - cpu0).as_secs_f64() / secs,
        server_cpu: (srv1 - srv0).as_secs_f64() / secs,
        checks_per_sec: (after.completed - before.completed) as f64 / secs,
        p50: after.lateness_quantile(0.5),
        p99: after.lateness_quantile(0.99),
        max: after.max_lateness,
    })
}

/// The baseline: a task per instance, each with its own interval.
async fn run_baseline(
    instances: usize,
    ports: &[u16],
    window: Duration,
    server_pid: &str,
) -> Result<Side, BoxError> {
    // The same client setup as the checker's.
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector);
    let late = Arc::new(Lateness::default());
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(instances);
    for i in 0..instances {
        let url: hyper::Uri =
            format!("http://127.0.0.1:{}/health", ports[i % ports.len()]).parse()?;
        let (client, late, done) = (client.clone(), late.clone(), done.clone());
        // Spread the same way: a start offset within the first second.
        let offset = Duration::from_micros((i as u64 * 1_000_000) / instances as u64);
        tasks.push(tokio::spawn(async move {
            let mut interval =
                tokio::time::interval_at(Instant::now() + offset, Duration::from_secs(1));
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let due = interval.tick().await;
                late.record(Instant::now().saturating_duration_since(due));
                let ok = match tokio::time::timeout(Duration::from_secs(2), client.get(url.clone()))
                    .await
                {
                    Ok(Ok(response)) => {
                        let ok = response.status().is_success();
                        let _ = response.into_body().collect().await;
                        ok
                    }
                    _ => false,
                };
                if ok {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    late.reset();
    let done0 = done.load(Ordering::Relaxed);
    let (cpu0, srv0, t0) = (cpu_time("self"), cpu_time(server_pid), Instant::now());
    tokio::time::sleep(window).await;
    let (cpu1, srv1, elapsed) = (cpu_time("self"), cpu_time(server_pid), t0.elapsed());
    let runs = done.load(Ordering::Relaxed) - done0;
    for task in &tasks {
        task.abort();
    }
    let secs = elapsed.as_secs_f64();
    let (p50, p99, max) = late.quantiles();
    Ok(Side {
        name: "task per instance (a task + interval each)",
        cpu: (cpu1 - cpu0).as_secs_f64() / secs,
        server_cpu: (srv1 - srv0).as_secs_f64() / secs,
        checks_per_sec: runs as f64 / secs,
        p50,
        p99,
        max,
    })
}

/// Lateness samples at 10 µs resolution up to 2 s.
struct Lateness {
    buckets: Vec<AtomicU64>,
    max_us: AtomicU64,
}

impl Default for Lateness {
    fn default() -> Self {
        Self {
            buckets: (0..200_000).map(|_| AtomicU64::new(0)).collect(),
            max_us: AtomicU64::new(0),
        }
    }
}

impl Lateness {
    fn record(&self, late: Duration) {
        let us = u64::try_from(late.as_micros()).unwrap_or(u64::MAX);
        self.max_us.fetch_max(us, Ordering::Relaxed);
        let i = usize::try_from(us / 10)
            .unwrap_or(usize::MAX)
            .min(self.buckets.len() - 1);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
    }

    fn reset(&self) {
        for b in &self.buckets {
            b.store(0, Ordering::Relaxed);
        }
        self.max_us.store(0, Ordering::Relaxed);
    }

    fn quantiles(&self) -> (Duration, Duration, Duration) {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let at = |q: f64| {
            let rank = ((q * total as f64).ceil() as u64).max(1);
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return Duration::from_micros((i as u64 + 1) * 10);
                }
            }
            Duration::ZERO
        };
        (
            at(0.5),
            at(0.99),
            Duration::from_micros(self.max_us.load(Ordering::Relaxed)),
        )
    }
}
