//! Exec checks with real commands, including one that outlives its
//! timeout together with a child of its own.

use std::time::Duration;

use HealthStatus::{Critical, Passing, Warning};
use fluxor_registry::{
    CheckSpec, HealthChecker, HealthCheckerConfig, HealthConfig, HealthReport, HealthStatus,
    ServiceDefinition, ServiceInstance, ServiceRegistry,
};

async fn setup(max_output: usize) -> (HealthChecker, ServiceInstance) {
    let registry = ServiceRegistry::builder().build().await.unwrap();
    let checker = HealthChecker::new(
        registry.clone(),
        HealthCheckerConfig {
            max_output,
            jitter: 0.0,
            ..Default::default()
        },
    );
    let instance = registry
        .register(ServiceDefinition::new("batch", "127.0.0.1", 9100))
        .await
        .unwrap();
    (checker, instance)
}

async fn once(
    checker: &HealthChecker,
    instance: &ServiceInstance,
    spec: CheckSpec,
) -> HealthReport {
    let config = HealthConfig {
        checks: vec![spec],
        ..Default::default()
    };
    checker.check_health(instance, &config).await.unwrap()
}

fn output(report: &HealthReport) -> &str {
    &report.checks[0].last.as_ref().unwrap().output
}

#[tokio::test]
async fn exit_codes_map_to_statuses() {
    let (checker, instance) = setup(4096).await;
    for (argv, want) in [
        (vec!["true"], Passing),
        (vec!["false"], Warning),
        (vec!["sh", "-c", "exit 1"], Warning),
        (vec!["sh", "-c", "exit 2"], Critical),
        (vec!["sh", "-c", "kill -9 $$"], Critical),
    ] {
        let report = once(&checker, &instance, CheckSpec::exec(argv.clone())).await;
        assert_eq!(report.status, want, "{argv:?}: {report:?}");
    }
    let report = once(&checker, &instance, CheckSpec::exec(["/nonexistent/probe"])).await;
    assert_eq!(report.status, Critical);
    assert!(
        output(&report).contains("failed to start"),
        "{}",
        output(&report)
    );
}

#[tokio::test]
async fn output_is_captured_without_a_shell_and_truncated() {
    let (checker, instance) = setup(256).await;
    let report = once(
        &checker,
        &instance,
        CheckSpec::exec(["sh", "-c", "echo out; echo err >&2; echo port=$FLUXOR_PORT"]),
    )
    .await;
    assert_eq!(report.status, Passing);
    let text = output(&report);
    assert!(
        text.contains("out") && text.contains("err") && text.contains("port=9100"),
        "{text}"
    );
    // No shell: metacharacters in an argument are just text.
    let report = once(
        &checker,
        &instance,
        CheckSpec::exec(["echo", "$(id); `id`"]),
    )
    .await;
    assert!(
        output(&report).contains("$(id); `id`"),
        "{}",
        output(&report)
    );
    // 100 KB of output is cut to the configured size.
    let report = once(
        &checker,
        &instance,
        CheckSpec::exec(["sh", "-c", "yes | head -c 100000"]),
    )
    .await;
    assert_eq!(report.status, Passing);
    assert!(output(&report).len() <= 256, "{}", output(&report).len());
    assert!(output(&report).ends_with("(truncated)"));
}

/// The state letter of `/proc/<pid>/stat`, or `None` if the process is gone.
#[cfg(target_os = "linux")]
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    after.trim_start().chars().next()
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn timeout_kills_the_whole_process_group_and_reaps_the_child() {
    use nix::sys::signal::Signal;
    use nix::sys::wait::{WaitStatus, waitpid};
    use nix::unistd::Pid;

    // Orphans of our children come to us, so the test can wait for the
    // shell's own child and see how it died.
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let (checker, instance) = setup(4096).await;
    // The shell starts a background sleep, prints both pids, and waits.
    let spec = CheckSpec::exec(["sh", "-c", "sleep 300 & echo $$ $!; wait"])
        .timeout(Duration::from_millis(500));
    let report = once(&checker, &instance, spec).await;
    assert_eq!(report.status, Critical);
    let text = output(&report);
    assert!(text.contains("timed out"), "{text}");
    let pids: Vec<u32> = text
        .lines()
        .last()
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let (shell, sleeper) = (pids[0], pids[1]);
    // The shell was the checker's child: killed and reaped, so gone, not
    // a zombie.
    assert_eq!(proc_state(shell), None, "shell {shell} still exists");
    // The sleep, in the shell's process group, was killed with SIGKILL
    // (not left running for 300 s): waiting for it returns at once.
    let pid = Pid::from_raw(i32::try_from(sleeper).unwrap());
    let status = tokio::task::spawn_blocking(move || waitpid(pid, None))
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(status, WaitStatus::Signaled(p, Signal::SIGKILL, _) if p == pid),
        "{status:?}"
    );
    assert_eq!(proc_state(sleeper), None);
}
