//! File persistence: an append-only log with checksums, group commit and
//! compaction.
//!
//! # Format
//!
//! The file starts with the 8-byte magic `FLXREG\0\x01`, followed by records:
//!
//! ```text
//! u32 LE  payload length (1 ..= 1 MiB)
//! u32 LE  CRC-32 (IEEE) of the payload
//! payload JSON: {"op":"put","instance":{…}} or {"op":"delete","id":"…"}
//! ```
//!
//! # Durability
//!
//! A `put` or `delete` future resolves once its record is written and
//! `fdatasync`ed. One writer thread owns the file and commits in groups:
//! every record queued while an fsync runs shares the next one, so
//! concurrent registrations cost far fewer than one fsync each. Heartbeats
//! write nothing; liveness is kept in memory, and an instance loaded after a
//! restart gets a full TTL from the moment it is loaded.
//!
//! # Recovery
//!
//! Opening replays the log. A record cut short at the end of the file (a
//! write torn by a crash) or a zero-filled tail is cut off; a complete
//! record whose checksum fails or whose content does not decode is skipped;
//! both are listed in the [`RecoveryReport`], logged, and the file is
//! rewritten without them. A file that does not start with the magic, or
//! whose record framing is lost before its end, is refused with
//! [`BackendError::Corrupt`] naming the file and the byte offset, and left
//! untouched.
//!
//! # Compaction
//!
//! When the log grows past [`FileOptions::compact_min_bytes`] and holds more
//! than twice the bytes of its live records, the writer rewrites the live
//! records to a temporary file, fsyncs it, renames it over the log and
//! fsyncs the directory, so a crash at any point leaves either the old or
//! the new file.
//!
//! A sibling file `{path}.lock` is locked while the backend is open, so two
//! processes cannot append to one log.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use tokio::sync::oneshot;

use super::backend::{Backend, BackendError, BoxFuture, DroppedRecord, Recovered, RecoveryReport};
use crate::instance::{InstanceId, ServiceInstance};

const MAGIC: &[u8; 8] = b"FLXREG\0\x01";
const FRAME_HEADER: usize = 8;
/// The largest payload a record may have.
pub const MAX_RECORD_LEN: usize = 1 << 20;
/// The most records one group commit takes.
const MAX_BATCH: usize = 4096;

/// Tuning for [`FileBackend`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FileOptions {
    /// Never compact a log smaller than this (default 1 MiB).
    pub compact_min_bytes: u64,
}

impl Default for FileOptions {
    fn default() -> Self {
        Self {
            compact_min_bytes: 1 << 20,
        }
    }
}

impl FileOptions {
    /// Sets [`compact_min_bytes`](Self::compact_min_bytes).
    pub fn compact_min_bytes(mut self, bytes: u64) -> Self {
        self.compact_min_bytes = bytes;
        self
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum LogRecord {
    Put { instance: ServiceInstance },
    Delete { id: InstanceId },
}

/// A [`Backend`] that persists registrations to an append-only log; see the
/// [module docs](self) for the format and guarantees.
pub struct FileBackend {
    path: PathBuf,
    tx: Option<mpsc::Sender<Op>>,
    writer: Option<std::thread::JoinHandle<()>>,
    recovered: Recovered,
}

impl std::fmt::Debug for FileBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileBackend")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

struct Op {
    id: InstanceId,
    /// The framed record; a put keeps it as the instance's live record.
    frame: Vec<u8>,
    put: bool,
    ack: oneshot::Sender<Result<(), BackendError>>,
}

impl FileBackend {
    /// Opens (or creates) the log at `path` with default options, replaying
    /// what it holds.
    pub async fn open(path: impl Into<PathBuf>) -> Result<Self, BackendError> {
        Self::open_with(path, FileOptions::default()).await
    }

    /// Opens (or creates) the log at `path` with `options`.
    pub async fn open_with(
        path: impl Into<PathBuf>,
        options: FileOptions,
    ) -> Result<Self, BackendError> {
        let path = path.into();
        let handle =
            tokio::runtime::Handle::try_current().map_err(|e| BackendError::Other(Box::new(e)))?;
        let p = path.clone();
        handle
            .spawn_blocking(move || Self::open_blocking(p, options))
            .await
            .map_err(|e| BackendError::Other(Box::new(e)))?
    }

    fn open_blocking(path: PathBuf, options: FileOptions) -> Result<Self, BackendError> {
        let io = |op: &'static str, p: &Path| {
            let path = p.to_path_buf();
            move |source| BackendError::Io { op, path, source }
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io("create directory", dir))?;
        }
        let lock_path = sibling(&path, "lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io("open", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(BackendError::Locked { path });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io("lock", &lock_path)(e)),
        }
        // A crash during compaction may leave its temporary file behind.
        let tmp = sibling(&path, "tmp");
        if tmp.exists() {
            std::fs::remove_file(&tmp).map_err(io("remove", &tmp))?;
        }

        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes).map_err(io("read", &path))?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("open", &path)(e)),
        }
        let scan = scan(&path, &bytes)?;
        let mut report = scan.report;
        report.path = Some(path.clone());
        report.instances = scan.live.len() as u64;
        if !report.is_clean() {
            tracing::warn!(
                target: "fluxor_registry::registry",
                path = %path.display(),
                dropped = ?report.dropped,
                truncated_bytes = report.truncated_bytes,
                "registry file was damaged; recovered every complete record"
            );
        }
        let live: HashMap<InstanceId, Vec<u8>> = scan
            .live
            .iter()
            .map(|(id, (_, frame))| (id.clone(), frame.clone()))
            .collect();
        let instances = scan.live.into_values().map(|(i, _)| i).collect();

        let mut writer = Writer {
            path: path.clone(),
            file: None,
            len: 0,
            live,
            live_bytes: 0,
            failed: None,
            options,
            _lock: lock,
        };
        writer.live_bytes = writer.live.values().map(|f| f.len() as u64).sum();
        if bytes.len() < MAGIC.len() || !report.is_clean() {
            // New, torn at creation, or damaged: write a clean file.
            writer.compact().map_err(io("rewrite", &path))?;
        } else {
            let file = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(io("open", &path))?;
            writer.len = bytes.len() as u64;
            writer.file = Some(file);
            writer.maybe_compact();
        }

        let (tx, rx) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("fluxor-registry-log".into())
            .spawn(move || writer.run(rx))
            .map_err(io("spawn writer thread for", &path))?;
        Ok(Self {
            path,
            tx: Some(tx),
            writer: Some(writer),
            recovered: Recovered { instances, report },
        })
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn submit(
        &self,
        id: InstanceId,
        record: &LogRecord,
        put: bool,
    ) -> BoxFuture<'static, Result<(), BackendError>> {
        let frame = match serde_json::to_vec(record) {
            Ok(payload) => frame(&payload),
            Err(e) => return Box::pin(std::future::ready(Err(BackendError::Other(Box::new(e))))),
        };
        let (ack, rx) = oneshot::channel();
        let sent = match &self.tx {
            Some(tx) => tx
                .send(Op {
                    id,
                    frame,
                    put,
                    ack,
                })
                .map_err(|_| ()),
            None => Err(()),
        };
        let path = self.path.clone();
        Box::pin(async move {
            let gone = || BackendError::Failed {
                path: path.clone(),
                reason: "the writer thread has stopped".into(),
            };
            sent.map_err(|()| gone())?;
            rx.await.map_err(|_| gone())?
        })
    }
}

impl Drop for FileBackend {
    /// Closes the queue and waits for the writer to finish what was queued,
    /// so the file (and its lock) is released when the backend is gone.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl Backend for FileBackend {
    fn name(&self) -> &'static str {
        "file"
    }

    fn load(&self) -> BoxFuture<'_, Result<Recovered, BackendError>> {
        let recovered = Recovered {
            instances: self.recovered.instances.clone(),
            report: self.recovered.report.clone(),
        };
        Box::pin(std::future::ready(Ok(recovered)))
    }

    fn put(&self, instance: &ServiceInstance) -> BoxFuture<'static, Result<(), BackendError>> {
        let record = LogRecord::Put {
            instance: instance.clone(),
        };
        self.submit(instance.id().clone(), &record, true)
    }

    fn delete(&self, instance: &ServiceInstance) -> BoxFuture<'static, Result<(), BackendError>> {
        let record = LogRecord::Delete {
            id: instance.id().clone(),
        };
        self.submit(instance.id().clone(), &record, false)
    }
}

fn sibling(path: &Path, ext: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(ext);
    PathBuf::from(name)
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_HEADER + payload.len());
    // Payloads are bounded well below u32::MAX by validation.
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

// === recovery ===

struct Scan {
    live: HashMap<InstanceId, (ServiceInstance, Vec<u8>)>,
    report: RecoveryReport,
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

/// Replays a log image; see the module docs for what is repaired and what is
/// refused.
fn scan(path: &Path, bytes: &[u8]) -> Result<Scan, BackendError> {
    let corrupt = |offset: usize, reason: &str| BackendError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason: reason.to_owned(),
    };
    let mut live = HashMap::new();
    let mut report = RecoveryReport::default();
    if bytes.len() < MAGIC.len() {
        if MAGIC.starts_with(bytes) {
            report.truncated_bytes = bytes.len() as u64;
            return Ok(Scan { live, report });
        }
        return Err(corrupt(0, "not a fluxor registry file (bad magic)"));
    }
    if &bytes[..MAGIC.len()] != MAGIC {
        return Err(corrupt(0, "not a fluxor registry file (bad magic)"));
    }
    let mut at = MAGIC.len();
    while at < bytes.len() {
        let rest = &bytes[at..];
        if rest.iter().all(|&b| b == 0) {
            report.truncated_bytes = rest.len() as u64;
            break;
        }
        if rest.len() < FRAME_HEADER {
            report.truncated_bytes = rest.len() as u64;
            break;
        }
        let len = read_u32(bytes, at) as usize;
        let crc = read_u32(bytes, at + 4);
        if len == 0 || len > MAX_RECORD_LEN {
            return Err(corrupt(at, &format!("record length {len} out of range")));
        }
        let end = at + FRAME_HEADER + len;
        if end > bytes.len() {
            report.truncated_bytes = rest.len() as u64;
            break;
        }
        let payload = &bytes[at + FRAME_HEADER..end];
        let framed = &bytes[at..end];
        let dropped = |reason: String| DroppedRecord {
            offset: at as u64,
            len: framed.len() as u64,
            reason,
        };
        if crc32fast::hash(payload) != crc {
            report.dropped.push(dropped("checksum mismatch".into()));
        } else {
            match serde_json::from_slice::<LogRecord>(payload) {
                Ok(LogRecord::Put { instance }) => {
                    report.records_read += 1;
                    live.insert(instance.id().clone(), (instance, framed.to_vec()));
                }
                Ok(LogRecord::Delete { id }) => {
                    report.records_read += 1;
                    live.remove(&id);
                }
                Err(e) => report
                    .dropped
                    .push(dropped(format!("undecodable record: {e}"))),
            }
        }
        at = end;
    }
    Ok(Scan { live, report })
}

// === impl Writer ===

struct Writer {
    path: PathBuf,
    file: Option<File>,
    len: u64,
    live: HashMap<InstanceId, Vec<u8>>,
    live_bytes: u64,
    failed: Option<String>,
    options: FileOptions,
    _lock: File,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Op>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            let result = self.commit(&mut batch);
            for op in batch {
                let reply = match &result {
                    Ok(()) => Ok(()),
                    Err(reason) => Err(BackendError::Failed {
                        path: self.path.clone(),
                        reason: reason.clone(),
                    }),
                };
                let _ = op.ack.send(reply);
            }
            if result.is_ok() {
                self.maybe_compact();
            }
        }
    }

    /// Appends and fsyncs a batch; on failure the writer takes no more
    /// writes, since the file's tail is then unknown.
    fn commit(&mut self, batch: &mut [Op]) -> Result<(), String> {
        if let Some(reason) = &self.failed {
            return Err(reason.clone());
        }
        let mut buf = Vec::with_capacity(batch.iter().map(|op| op.frame.len()).sum());
        for op in batch.iter() {
            buf.extend_from_slice(&op.frame);
        }
        let written = match self.file.as_mut() {
            Some(file) => file.write_all(&buf).and_then(|()| file.sync_data()),
            None => Err(io::Error::other("log file is not open")),
        };
        if let Err(e) = written {
            let reason = format!("append to {}: {e}", self.path.display());
            tracing::error!(target: "fluxor_registry::registry", %reason, "registry file write failed");
            self.failed = Some(reason.clone());
            return Err(reason);
        }
        self.len += buf.len() as u64;
        for op in batch.iter_mut() {
            let old = if op.put {
                let frame = std::mem::take(&mut op.frame);
                self.live_bytes += frame.len() as u64;
                self.live.insert(op.id.clone(), frame)
            } else {
                self.live.remove(&op.id)
            };
            if let Some(old) = old {
                self.live_bytes -= old.len() as u64;
            }
        }
        Ok(())
    }

    fn maybe_compact(&mut self) {
        let live = self.live_bytes + MAGIC.len() as u64;
        if self.len >= self.options.compact_min_bytes && self.len > 2 * live {
            let compacted = self.compact();
            if let Err(e) = compacted {
                tracing::warn!(
                    target: "fluxor_registry::registry",
                    path = %self.path.display(), error = %e,
                    "registry file compaction failed; the log stays as it was"
                );
            }
        }
    }

    /// Writes the live records to a temporary file and renames it over the
    /// log, fsyncing the file and its directory.
    fn compact(&mut self) -> io::Result<()> {
        let tmp = sibling(&self.path, "tmp");
        let mut out = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&tmp)?;
        let mut len = MAGIC.len() as u64;
        let mut buf = Vec::with_capacity(self.live_bytes as usize + MAGIC.len());
        buf.extend_from_slice(MAGIC);
        for frame in self.live.values() {
            buf.extend_from_slice(frame);
            len += frame.len() as u64;
        }
        out.write_all(&buf)?;
        out.sync_all()?;
        drop(out);
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            File::open(dir)?.sync_all()?;
        }
        let reopened = OpenOptions::new().append(true).open(&self.path);
        match reopened {
            Ok(file) => {
                self.file = Some(file);
                self.len = len;
                Ok(())
            }
            Err(e) => {
                self.failed = Some(format!(
                    "reopen {} after compaction: {e}",
                    self.path.display()
                ));
                self.file = None;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::{HealthStatus, Liveness, ServiceDefinition};
    use std::time::SystemTime;

    fn instance(n: u32) -> ServiceInstance {
        let def = ServiceDefinition::new("svc", "127.0.0.1", 8000 + n as u16);
        let version = def.validate().unwrap();
        let now = SystemTime::now();
        ServiceInstance::new(
            InstanceId::new(format!("svc-{n}")).unwrap(),
            def,
            version,
            now,
            HealthStatus::Passing,
            Liveness::new(now, u64::MAX),
        )
    }

    fn record(r: &LogRecord) -> Vec<u8> {
        frame(&serde_json::to_vec(r).unwrap())
    }

    fn image(records: &[Vec<u8>]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for r in records {
            out.extend_from_slice(r);
        }
        out
    }

    fn put(n: u32) -> Vec<u8> {
        record(&LogRecord::Put {
            instance: instance(n),
        })
    }

    fn ids(scan: &Scan) -> Vec<String> {
        let mut v: Vec<_> = scan.live.keys().map(|k| k.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn replays_puts_and_deletes() {
        let del = record(&LogRecord::Delete {
            id: InstanceId::new("svc-1").unwrap(),
        });
        let s = scan(Path::new("f"), &image(&[put(1), put(2), del])).unwrap();
        assert_eq!(ids(&s), ["svc-2"]);
        assert!(s.report.is_clean());
        assert_eq!(s.report.records_read, 3);
    }

    #[test]
    fn every_torn_tail_keeps_every_complete_record() {
        let full = image(&[put(1), put(2)]);
        let first_end = MAGIC.len() + put(1).len();
        for cut in MAGIC.len()..full.len() {
            let s = scan(Path::new("f"), &full[..cut]).unwrap();
            let expected: &[&str] = if cut >= first_end { &["svc-1"] } else { &[] };
            assert_eq!(ids(&s), expected, "cut at {cut}");
            let tail = if cut >= first_end {
                cut - first_end
            } else {
                cut - MAGIC.len()
            };
            assert_eq!(s.report.truncated_bytes, tail as u64, "cut at {cut}");
        }
        // A torn file header is an empty log.
        for cut in 0..MAGIC.len() {
            let s = scan(Path::new("f"), &full[..cut]).unwrap();
            assert!(s.live.is_empty());
        }
    }

    #[test]
    fn zero_filled_tail_is_cut() {
        let mut img = image(&[put(1)]);
        img.extend_from_slice(&[0; 100]);
        let s = scan(Path::new("f"), &img).unwrap();
        assert_eq!(ids(&s), ["svc-1"]);
        assert_eq!(s.report.truncated_bytes, 100);
    }

    #[test]
    fn bad_checksum_in_the_middle_is_dropped_and_reported() {
        let mut bad = put(2);
        let last = bad.len() - 2;
        bad[last] ^= 0xff;
        let offset = MAGIC.len() + put(1).len();
        let s = scan(Path::new("f"), &image(&[put(1), bad, put(3)])).unwrap();
        assert_eq!(ids(&s), ["svc-1", "svc-3"]);
        assert_eq!(s.report.dropped.len(), 1);
        assert_eq!(s.report.dropped[0].offset, offset as u64);
        assert_eq!(s.report.dropped[0].reason, "checksum mismatch");
    }

    #[test]
    fn undecodable_record_is_dropped() {
        let s = scan(
            Path::new("f"),
            &image(&[frame(b"{\"op\":\"nope\"}"), put(1)]),
        )
        .unwrap();
        assert_eq!(ids(&s), ["svc-1"]);
        assert_eq!(s.report.dropped.len(), 1);
        assert!(s.report.dropped[0].reason.starts_with("undecodable"));
    }

    #[test]
    fn garbage_is_refused_with_path_and_offset() {
        let err = scan(Path::new("/x/reg.db"), b"hello world, not a log")
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "corrupt registry file /x/reg.db at byte offset 0: not a fluxor registry file (bad magic)"
        );
        let mut img = image(&[put(1)]);
        let at = img.len();
        img.extend_from_slice(&[0xff; 64]);
        match scan(Path::new("f"), &img).err().unwrap() {
            BackendError::Corrupt { offset, .. } => assert_eq!(offset, at as u64),
            other => panic!("unexpected {other}"),
        }
    }
}
