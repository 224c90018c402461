//! The [`Backend`] trait, which owns durability and sharing, and the
//! in-memory backend.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::SystemTime;

use futures_core::Stream;

use crate::event::DeregisterReason;
use crate::instance::{InstanceId, ServiceInstance};

/// A boxed, sendable future, as the [`Backend`] methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A boxed, sendable stream, as [`Backend::remote_changes`] returns.
pub type BoxStream<'a, T> = Pin<Box<dyn Stream<Item = T> + Send + 'a>>;

/// Where a registry keeps its instances beyond its own memory.
///
/// The registry keeps every instance in an in-process index that all reads
/// use; a backend makes registrations durable (a file) or shared between
/// processes (etcd). Implementations: [`MemoryBackend`] (the default: nothing
/// beyond the process), [`FileBackend`](crate::registry::FileBackend)
/// (`builder().persistence(path)`), and with the `etcd` feature
/// `EtcdBackend` (`builder().etcd(endpoints)`).
///
/// # Ordering
///
/// The registry calls [`put`](Backend::put) and [`delete`](Backend::delete)
/// in the order it applies writes, while holding its write lock. A backend
/// must fix the order of its writes at the call (enqueue synchronously), not
/// when the returned future is first polled; the future resolves once the
/// write is durable. Calls must be cheap: no blocking I/O inside the call.
pub trait Backend: Send + Sync + 'static {
    /// A short name for logs and stats, e.g. `"memory"` or `"file"`.
    fn name(&self) -> &'static str;

    /// Reads what the backend holds; called once when the registry is built.
    fn load(&self) -> BoxFuture<'_, Result<Recovered, BackendError>>;

    /// Stores `instance` (new or replacing the one with its id).
    fn put(&self, instance: &ServiceInstance) -> BoxFuture<'static, Result<(), BackendError>>;

    /// Removes the instance.
    fn delete(&self, instance: &ServiceInstance) -> BoxFuture<'static, Result<(), BackendError>>;

    /// A heartbeat arrived for `instance`. Local backends do nothing (the
    /// registry tracks liveness in memory; heartbeats never cost an fsync);
    /// a distributed one refreshes its lease.
    fn heartbeat(
        &self,
        instance: &ServiceInstance,
    ) -> BoxFuture<'static, Result<(), BackendError>> {
        let _ = instance;
        Box::pin(std::future::ready(Ok(())))
    }

    /// Changes made by other processes, for a backend shared between them.
    /// The registry applies each to its index and publishes its events.
    /// Local backends return `None`.
    fn remote_changes(&self) -> Option<BoxStream<'static, RemoteChange>> {
        None
    }

    /// Whether the backend decides when instances expire (etcd: leases).
    ///
    /// When `true`, the registry runs no TTL expiry of its own for any
    /// instance: heartbeats still move
    /// [`last_heartbeat`](ServiceInstance::last_heartbeat) and reach
    /// [`heartbeat`](Backend::heartbeat), and the backend reports expiries
    /// through [`remote_changes`](Backend::remote_changes). Local backends
    /// return `false` (the default), and the registry expires instances
    /// whose TTL passes without a heartbeat.
    fn owns_liveness(&self) -> bool {
        false
    }

    /// The backend's health as a source of truth: whether the registry's
    /// view may be stale, and what it had to skip. Local backends are never
    /// stale (the default).
    fn status(&self) -> BackendStatus {
        BackendStatus::default()
    }
}

/// What [`Backend::status`] reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackendStatus {
    /// Since when the registry has not been following the shared store (the
    /// connection is down or being re-established): reads keep serving the
    /// last known state, which may be stale. `None` while up to date.
    pub stale_since: Option<SystemTime>,
    /// How many times the view was rebuilt from a full read (after the
    /// store compacted away the changes it missed).
    pub resyncs: u64,
    /// How many stored values were skipped because they did not decode.
    pub rejected: u64,
    /// The last skipped value's key and why it was skipped.
    pub last_rejected: Option<String>,
}

/// A change made elsewhere, reported by [`Backend::remote_changes`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum RemoteChange {
    /// An instance was registered or updated.
    Upsert(ServiceInstance),
    /// An instance left.
    Remove {
        /// Its id.
        id: InstanceId,
        /// Why, as far as the backend can tell.
        reason: DeregisterReason,
    },
}

/// What [`Backend::load`] found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The instances to start with.
    pub instances: Vec<ServiceInstance>,
    /// What the backend had to drop or repair to read them.
    pub report: RecoveryReport,
}

/// What a backend found when it loaded, and what it dropped to get there.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RecoveryReport {
    /// The file read, for file backends.
    pub path: Option<PathBuf>,
    /// How many complete, valid records were read.
    pub records_read: u64,
    /// How many instances were live after replaying them.
    pub instances: u64,
    /// Records that were skipped (bad checksum, undecodable content).
    pub dropped: Vec<DroppedRecord>,
    /// Bytes cut from the end of the file: a write torn by a crash.
    pub truncated_bytes: u64,
}

impl RecoveryReport {
    /// Whether anything was dropped or cut.
    pub fn is_clean(&self) -> bool {
        self.dropped.is_empty() && self.truncated_bytes == 0
    }
}

/// One record a backend skipped while loading.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DroppedRecord {
    /// Its byte offset in the file.
    pub offset: u64,
    /// Its length in bytes, framing included.
    pub len: u64,
    /// Why it was dropped.
    pub reason: String,
}

/// A backend failed to store or load.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// An I/O operation on a file failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done ("open", "fsync", …).
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is damaged in a way that cannot be repaired without losing
    /// records after the damage; nothing was changed.
    #[error("corrupt registry file {} at byte offset {offset}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where the damage starts.
        offset: u64,
        /// What is wrong there.
        reason: String,
    },
    /// Another registry holds the file.
    #[error("registry file {} is locked by another process", path.display())]
    Locked {
        /// The file.
        path: PathBuf,
    },
    /// An earlier write failed, and the backend refuses further writes rather
    /// than risk a file that lies about what it holds.
    #[error("backend for {} failed earlier and takes no more writes: {reason}", path.display())]
    Failed {
        /// The file.
        path: PathBuf,
        /// The first failure.
        reason: String,
    },
    /// Any other failure, from a backend outside this crate.
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

// === impl MemoryBackend ===

/// Keeps nothing beyond the registry's own memory: the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryBackend;

impl Backend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn load(&self) -> BoxFuture<'_, Result<Recovered, BackendError>> {
        Box::pin(std::future::ready(Ok(Recovered::default())))
    }

    fn put(&self, _: &ServiceInstance) -> BoxFuture<'static, Result<(), BackendError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn delete(&self, _: &ServiceInstance) -> BoxFuture<'static, Result<(), BackendError>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

impl fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(path) = &self.path {
            write!(f, "{}: ", path.display())?;
        }
        write!(
            f,
            "{} records read, {} instances, {} dropped, {} bytes truncated",
            self.records_read,
            self.instances,
            self.dropped.len(),
            self.truncated_bytes
        )
    }
}
