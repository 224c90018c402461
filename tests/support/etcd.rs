//! A real etcd for the tests: the shared node `scripts/test.sh` starts, or
//! a private child process on free loopback ports with a temporary data dir
//! (for tests that kill and restart it).
#![allow(dead_code, unreachable_pub)]

use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::net::TcpStream;

/// The variable `scripts/test.sh` exports with the shared node's endpoint.
pub const ENDPOINTS_ENV: &str = "FLUXOR_ETCD_ENDPOINTS";
/// The variable `scripts/test.sh` exports with the etcd binary.
pub const BIN_ENV: &str = "FLUXOR_ETCD_BIN";

fn required(var: &str) -> String {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{var} is not set: the etcd tests need a real etcd. Run them with \
             `scripts/test.sh`, which installs etcd, starts a throwaway node and \
             exports {ENDPOINTS_ENV} and {BIN_ENV}."
        ),
    }
}

/// The shared node's endpoint, e.g. `http://127.0.0.1:41234`.
pub fn shared_endpoint() -> String {
    required(ENDPOINTS_ENV)
}

/// A prefix no other test uses, so tests can share one node.
pub fn unique_prefix(test: &str) -> String {
    format!("/fluxor-test/{test}-{}", std::process::id())
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A private single-node etcd, killed (and its data dir removed) on drop.
pub struct EtcdProcess {
    bin: String,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl EtcdProcess {
    /// Starts a node and waits until it answers.
    pub async fn start() -> Self {
        let mut etcd = Self {
            bin: required(BIN_ENV),
            dir: tempfile::tempdir().expect("temp dir"),
            client_port: free_port(),
            peer_port: free_port(),
            child: None,
        };
        etcd.spawn().await;
        etcd
    }

    /// `http://127.0.0.1:{client port}`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The running node's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("etcd is running")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    async fn spawn(&mut self) {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(&self.bin)
            .args(["--name", "fluxor-test"])
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("fluxor-test={peer}")])
            .args(["--heartbeat-interval", "10", "--election-timeout", "100"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin));
        self.child = Some(child);
        self.wait_healthy().await;
    }

    /// Polls `/health` until the node says it is healthy (about 0.1 s).
    async fn wait_healthy(&self) {
        let client = crate::support::http_client();
        let url = format!("{}/health", self.endpoint());
        for _ in 0..500 {
            if let Ok(body) = crate::support::get_text(&client, url.clone()).await
                && body.contains("\"health\":\"true\"")
            {
                return;
            }
            // Polling a child process we do not control: there is nothing
            // to await instead.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("etcd at {} did not become healthy in 10 s", self.endpoint());
    }

    /// SIGKILLs the node (its data dir stays).
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The port is free once nothing accepts on it.
        let addr = format!("127.0.0.1:{}", self.client_port);
        for _ in 0..250 {
            if TcpStream::connect(&addr).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("etcd still accepts on {addr} after SIGKILL");
    }

    /// Starts the node again on the same ports; with `wipe`, on an empty
    /// data dir (a node that lost its data).
    pub async fn restart(&mut self, wipe: bool) {
        self.kill().await;
        if wipe {
            let _ = std::fs::remove_dir_all(self.data_dir());
        }
        self.spawn().await;
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `etcdctl` (API v3) against `endpoint` and returns its stdout.
pub fn etcdctl(endpoint: &str, args: &[&str]) -> String {
    let bin = std::env::var("FLUXOR_ETCDCTL_BIN").unwrap_or_else(|_| "etcdctl".to_owned());
    let out = Command::new(&bin)
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(endpoint)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {bin}: {e} (run scripts/test.sh)"));
    assert!(
        out.status.success(),
        "etcdctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
