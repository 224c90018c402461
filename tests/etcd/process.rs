//! A second OS process registers through etcd and is killed: its instances
//! disappear when their leases expire.
//!
//! The test re-runs its own binary as the child (selected by an environment
//! variable), so the child is a real separate process with its own client.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use fluxor_registry::{Query, ServiceDefinition};

use crate::etcd_support::{shared_endpoint, unique_prefix};
use crate::{id, inserted, next_change, registry, removed};

const CHILD_ENV: &str = "FLUXOR_ETCD_CHILD";
const TEST_NAME: &str = "process::a_killed_process_instances_expire_with_their_leases";

/// Child mode: register two instances (one with a TTL it heartbeats, one
/// without, kept alive by the backend), say so, and serve until killed.
fn child(spec: &str) -> ! {
    let (endpoint, prefix) = spec.split_once(' ').expect("endpoint and prefix");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let registry = registry(endpoint, prefix).await;
        let beating = registry
            .register(
                ServiceDefinition::new("child", "127.0.0.1", 8001)
                    .id(id("child-ttl"))
                    .ttl(Duration::from_secs(1)),
            )
            .await
            .expect("register");
        registry
            .register(ServiceDefinition::new("child", "127.0.0.1", 8002).id(id("child-lease")))
            .await
            .expect("register");
        let mut out = std::io::stdout().lock();
        writeln!(out, "ready").expect("stdout");
        out.flush().expect("stdout");
        drop(out);
        // A live process heartbeating its TTL instance, until SIGKILL.
        let mut beat = tokio::time::interval(Duration::from_millis(200));
        for n in 0u64.. {
            beat.tick().await;
            registry.heartbeat(beating.id()).await.expect("heartbeat");
            if n == 15 {
                // Past both leases' TTLs (1 s and 2 s): both still live.
                let mut out = std::io::stdout().lock();
                writeln!(out, "alive").expect("stdout");
                out.flush().expect("stdout");
            }
        }
    });
    std::process::exit(0)
}

#[test]
fn a_killed_process_instances_expire_with_their_leases() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        child(&spec);
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(parent());
}

async fn parent() {
    let endpoint = shared_endpoint();
    let prefix = unique_prefix("killed-process");
    let parent = registry(&endpoint, &prefix).await;
    let mut sees = parent.discover(Query::name("child"));

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, format!("{endpoint} {prefix}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut wait_line = async |want: &str| loop {
        match tokio::time::timeout(crate::PATIENCE, lines.recv()).await {
            Ok(Some(line)) if line.ends_with(want) => return,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the child exited before saying {want}"),
            Err(_) => panic!("the child never said {want}"),
        }
    };
    wait_line("ready").await;

    let mut ids = vec![
        inserted(next_change(&mut sees).await).id().clone(),
        inserted(next_change(&mut sees).await).id().clone(),
    ];
    ids.sort();
    assert_eq!(ids, [id("child-lease"), id("child-ttl")]);

    // Leases outlive their TTLs while the child lives: heartbeats and the
    // backend's own keep-alive.
    wait_line("alive").await;
    assert_eq!(parent.find_services(&Query::name("child")).len(), 2);

    child.kill().unwrap();
    child.wait().unwrap();
    let killed_at = tokio::time::Instant::now();
    let mut gone = vec![
        removed(next_change(&mut sees).await),
        removed(next_change(&mut sees).await),
    ];
    gone.sort();
    assert_eq!(gone, ids);
    // Not before the shorter lease (1 s) could have run out.
    assert!(killed_at.elapsed() >= Duration::from_millis(500));
    assert!(parent.find_services(&Query::name("child")).is_empty());
}
