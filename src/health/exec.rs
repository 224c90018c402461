//! Exec checks: a command run without a shell, killed with its whole
//! process group on timeout.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};

use super::output::{Outcome, truncate};
use crate::instance::{HealthStatus, ServiceInstance};

/// Exit 0 passing, 1 warning, anything else (or a signal) critical.
pub(crate) fn classify(status: ExitStatus) -> HealthStatus {
    match status.code() {
        Some(0) => HealthStatus::Passing,
        Some(1) => HealthStatus::Warning,
        _ => HealthStatus::Critical,
    }
}

pub(crate) async fn probe(
    argv: &[String],
    instance: &ServiceInstance,
    timeout: Duration,
    max_output: usize,
) -> Outcome {
    let Some((program, args)) = argv.split_first() else {
        return Outcome::critical("exec: argv is empty".to_owned());
    };
    let mut command = Command::new(program);
    command
        .args(args)
        .env("FLUXOR_INSTANCE_ID", instance.id().as_str())
        .env("FLUXOR_SERVICE", instance.name())
        .env("FLUXOR_HOST", instance.host())
        .env("FLUXOR_PORT", instance.port().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Its own process group, so a timeout can kill everything it started.
    #[cfg(unix)]
    command.process_group(0);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return Outcome::critical(format!("exec {program:?}: failed to start: {e}")),
    };
    // Kept: once the child is reaped `child.id()` is gone, but its group
    // may live on.
    let pid = child.id();
    let mut out = Capture::new(max_output);
    let mut err = Capture::new(max_output);
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut exit: Option<std::io::Result<ExitStatus>> = None;
    let timed_out = loop {
        if exit.is_some() && stdout.is_none() && stderr.is_none() {
            break false;
        }
        tokio::select! {
            done = out.fill(&mut stdout), if stdout.is_some() => if done { stdout = None },
            done = err.fill(&mut stderr), if stderr.is_some() => if done { stderr = None },
            status = child.wait(), if exit.is_none() => exit = Some(status),
            () = &mut deadline => break true,
        }
    };
    if timed_out {
        kill_group(&mut child, pid).await;
        if exit.is_none() {
            exit = Some(child.wait().await);
        }
    }
    let mut text = out.into_string();
    text.push_str(&err.into_string());
    match exit {
        Some(Ok(status)) if !timed_out => Outcome {
            status: classify(status),
            output: truncate(format!("exec {program:?}: {status}\n{text}"), max_output),
        },
        Some(Ok(status)) if status.code().is_some() => Outcome {
            // It exited, but something it started kept its output open.
            status: HealthStatus::Critical,
            output: truncate(
                format!(
                    "exec {program:?}: {status}, but its output stayed open past the timeout of {timeout:?}; process group killed\n{text}"
                ),
                max_output,
            ),
        },
        Some(Ok(_)) | None => Outcome::critical(truncate(
            format!("exec {program:?}: timed out after {timeout:?}; process group killed\n{text}"),
            max_output,
        )),
        Some(Err(e)) => Outcome::critical(format!("exec {program:?}: waiting failed: {e}")),
    }
}

/// Kills the child's process group and the child, and reaps the child.
async fn kill_group(child: &mut Child, pid: Option<u32>) {
    #[cfg(unix)]
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        use nix::sys::signal::{Signal, killpg};
        use nix::unistd::Pid;
        // The group id is the child's pid (`process_group(0)`). ESRCH means
        // everything in it is already gone.
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
    #[cfg(not(unix))]
    let _ = pid;
    // Kills the child if it still runs (non-unix), and reaps it.
    let _ = child.kill().await;
}

/// Keeps the first `max` bytes of a stream and drains the rest.
struct Capture {
    kept: Vec<u8>,
    max: usize,
    buf: [u8; 1024],
}

impl Capture {
    fn new(max: usize) -> Self {
        Self {
            kept: Vec::new(),
            max,
            buf: [0; 1024],
        }
    }

    /// Reads once; returns true at end of stream (or on an error).
    async fn fill<R: AsyncRead + Unpin>(&mut self, stream: &mut Option<R>) -> bool {
        let Some(stream) = stream.as_mut() else {
            return true;
        };
        match stream.read(&mut self.buf).await {
            Ok(0) | Err(_) => true,
            Ok(n) => {
                let room = self.max.saturating_sub(self.kept.len());
                self.kept.extend_from_slice(&self.buf[..n.min(room)]);
                false
            }
        }
    }

    fn into_string(self) -> String {
        String::from_utf8_lossy(&self.kept).into_owned()
    }
}
