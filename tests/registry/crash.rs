//! Kill a writer with SIGKILL at random points and check that every
//! acknowledged write survived.
//!
//! The test re-runs its own binary as the child (selected by an environment
//! variable), so the child is a real separate process writing the real file.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use fluxor_registry::{InstanceId, ServiceDefinition, ServiceRegistry};
use rand::{Rng, SeedableRng};

const CHILD_ENV: &str = "FLUXOR_CRASH_CHILD_FILE";
const TEST_NAME: &str = "crash::acknowledged_writes_survive_sigkill";

/// Child mode: register (and now and then deregister) instances forever,
/// printing each intent before the call and each acknowledgement after.
fn child(path: &str) -> ! {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let registry = ServiceRegistry::builder()
            .persistence(path)
            .build()
            .await
            .expect("open");
        let round = std::process::id();
        let mut out = std::io::stdout().lock();
        let mut registered: Vec<InstanceId> = Vec::new();
        for i in 0u32.. {
            if i % 3 == 2 && !registered.is_empty() {
                let id = registered.remove(0);
                writeln!(out, "d {id}").expect("stdout");
                out.flush().expect("stdout");
                registry.deregister(&id).await.expect("deregister");
                writeln!(out, "D {id}").expect("stdout");
            } else {
                let id = InstanceId::new(format!("crash-{round}-{i}")).expect("id");
                let port = u16::try_from(i % 60_000 + 1).expect("port");
                registry
                    .register(
                        ServiceDefinition::new("crash", "127.0.0.1", port)
                            .id(id.clone())
                            .tag("t"),
                    )
                    .await
                    .expect("register");
                writeln!(out, "R {id}").expect("stdout");
                registered.push(id);
            }
            out.flush().expect("stdout");
        }
    });
    std::process::exit(0)
}

/// Notes one line of the child's output; returns 1 for an acknowledgement.
fn record(
    line: &str,
    present: &mut HashSet<String>,
    maybe: &mut HashSet<String>,
    absent: &mut HashSet<String>,
) -> usize {
    if let Some(id) = line.strip_prefix("R ") {
        present.insert(id.to_owned());
        1
    } else if let Some(id) = line.strip_prefix("d ") {
        // From here until its ack the instance may be either.
        present.remove(id);
        maybe.insert(id.to_owned());
        0
    } else if let Some(id) = line.strip_prefix("D ") {
        maybe.remove(id);
        absent.insert(id.to_owned());
        1
    } else {
        0
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        child(&path);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    let seed: u64 = rand::random();
    println!("crash test seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let mut present: HashSet<String> = HashSet::new();
    let mut absent: HashSet<String> = HashSet::new();
    let mut maybe: HashSet<String> = HashSet::new();
    for round in 0..4 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let kill_after = rng.random_range(5..400);
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut acks = 0;
        for line in lines.by_ref() {
            acks += record(&line.unwrap(), &mut present, &mut maybe, &mut absent);
            if acks >= kill_after {
                break;
            }
        }
        child.kill().unwrap(); // SIGKILL
        // What the child printed before it died was acknowledged too.
        for line in lines {
            acks += record(&line.unwrap(), &mut present, &mut maybe, &mut absent);
        }
        child.wait().unwrap();
        assert!(
            acks >= kill_after,
            "round {round}: the child died early after {acks} acks"
        );

        runtime.block_on(async {
            let registry = ServiceRegistry::builder()
                .persistence(&path)
                .build()
                .await
                .unwrap();
            let have: HashSet<String> = registry
                .get_all_services()
                .iter()
                .map(|i| i.id().to_string())
                .collect();
            let missing: Vec<_> = present.difference(&have).collect();
            assert!(
                missing.is_empty(),
                "seed {seed} round {round}: lost acknowledged {missing:?}"
            );
            let resurrected: Vec<_> = absent.intersection(&have).collect();
            assert!(
                resurrected.is_empty(),
                "seed {seed} round {round}: deregistered but back {resurrected:?}"
            );
            let unexpected: Vec<_> = have
                .iter()
                .filter(|id| !present.contains(*id) && !maybe.contains(*id))
                .collect();
            // An unacknowledged registration in flight may have landed; at most one.
            assert!(
                unexpected.len() <= 1,
                "seed {seed} round {round}: unexpected {unexpected:?}"
            );
            println!(
                "round {round}: {} acked, report: {}",
                acks,
                registry.recovery_report()
            );
            // What is on disk now is what the next child starts from.
            present = have;
        });
        maybe.clear();
    }
    assert!(present.len() > 5);
}
