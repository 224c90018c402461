//! What a service instance is: [`ServiceDefinition`] (what a caller registers),
//! [`ServiceInstance`] (what the registry holds and hands out) and
//! [`InstanceId`].
//!
//! # Examples
//!
//! ```
//! use fluxor_registry::{Protocol, ServiceDefinition};
//! use serde_json::json;
//!
//! let definition = ServiceDefinition::new("inventory-service", "localhost", 3001)
//!     .version("1.0.0")
//!     .protocol(Protocol::Http)
//!     .tags(["inventory", "core"])
//!     .metadata("region", "us-east-1")
//!     .metadata("capabilities", json!(["read", "write"]));
//! assert!(definition.validate().is_ok());
//! assert_eq!(definition.name(), "inventory-service");
//! ```

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::validation::{self, ValidationError, ValidationErrorKind};

// === InstanceId ===

/// The identity of one registered instance: unique within a registry.
///
/// Cheap to clone (`Arc<str>` inside). Either chosen by the caller through
/// [`ServiceDefinition::id`] or generated at registration as
/// `{name}-{16 hex digits}`.
///
/// ```
/// use fluxor_registry::InstanceId;
///
/// let id: InstanceId = "orders-1".parse().unwrap();
/// assert_eq!(id.as_str(), "orders-1");
/// assert!("has space".parse::<InstanceId>().is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InstanceId(Arc<str>);

impl InstanceId {
    /// Validates and wraps an id: 1 to 128 ASCII letters, digits, `-`, `_`,
    /// `.` or `:`, starting with a letter or digit.
    pub fn new(id: impl Into<String>) -> Result<Self, ValidationError> {
        let id = id.into();
        validation::identifier("id", &id, validation::MAX_ID_LEN, &['-', '_', '.', ':'])?;
        Ok(Self(id.into()))
    }

    pub(crate) fn generate(name: &str) -> Self {
        Self(format!("{name}-{:016x}", rand::random::<u64>()).into())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Borrow<str> for InstanceId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for InstanceId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for InstanceId {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for InstanceId {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl TryFrom<&str> for InstanceId {
    type Error = ValidationError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<InstanceId> for String {
    fn from(id: InstanceId) -> Self {
        id.0.to_string()
    }
}

// === Protocol ===

/// The protocol an instance speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Protocol {
    /// HTTP/1.1 or HTTP/2 in clear text (the default).
    #[default]
    Http,
    /// HTTP over TLS.
    Https,
    /// gRPC (HTTP/2).
    Grpc,
    /// Raw TCP.
    Tcp,
    /// Raw UDP.
    Udp,
}

impl Protocol {
    /// Every protocol, in the order of their names in [`Protocol::NAMES`].
    pub const ALL: [Protocol; 5] = [
        Protocol::Http,
        Protocol::Https,
        Protocol::Grpc,
        Protocol::Tcp,
        Protocol::Udp,
    ];
    /// The names [`Protocol::from_str`] accepts.
    pub const NAMES: [&'static str; 5] = ["http", "https", "grpc", "tcp", "udp"];

    /// The lowercase name, as in the original module (`"http"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Https => "https",
            Protocol::Grpc => "grpc",
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    /// The URI scheme used to reach an instance: gRPC runs over `http`.
    pub fn scheme(self) -> &'static str {
        match self {
            Protocol::Http | Protocol::Grpc => "http",
            other => other.as_str(),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown protocol name; the message lists the valid ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown protocol {name:?}, expected one of: http, https, grpc, tcp, udp")]
pub struct UnknownProtocol {
    name: String,
}

impl FromStr for Protocol {
    type Err = UnknownProtocol;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownProtocol { name: s.to_owned() })
    }
}

// === HealthStatus ===

/// The health of an instance, with Consul's four states.
///
/// An instance registered without health checks is [`Passing`]; the health
/// checker moves it as its checks report. `Passing` and `Warning` count as
/// healthy: a warning instance still serves (Consul's rule for HTTP 429).
///
/// [`Passing`]: HealthStatus::Passing
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Serving normally.
    #[default]
    Passing,
    /// Serving, but degraded.
    Warning,
    /// Not serving.
    Critical,
    /// Not known yet (checks configured but none has completed).
    Unknown,
}

impl HealthStatus {
    /// Whether an instance in this state should receive traffic.
    pub fn is_healthy(self) -> bool {
        matches!(self, HealthStatus::Passing | HealthStatus::Warning)
    }

    /// The lowercase name (`"passing"`).
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Passing => "passing",
            HealthStatus::Warning => "warning",
            HealthStatus::Critical => "critical",
            HealthStatus::Unknown => "unknown",
        }
    }
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === ServiceDefinition ===

/// What a caller registers: the name, address and attributes of one instance.
///
/// Built with [`ServiceDefinition::new`] and chained setters; checked by
/// [`validate`](Self::validate), which [`ServiceRegistry::register`] calls.
///
/// [`ServiceRegistry::register`]: crate::ServiceRegistry::register
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceDefinition {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<InstanceId>,
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    host: String,
    port: u16,
    #[serde(default)]
    protocol: Protocol,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    metadata: BTreeMap<String, Value>,
    #[serde(default = "default_weight")]
    weight: u32,
    #[serde(
        default,
        rename = "ttl_ms",
        with = "duration_ms",
        skip_serializing_if = "Option::is_none"
    )]
    ttl: Option<Duration>,
}

fn default_weight() -> u32 {
    1
}

impl ServiceDefinition {
    /// A definition of an instance of `name` reachable at `host:port`, with
    /// protocol HTTP, weight 1, no version, tags, metadata or TTL.
    pub fn new(name: impl Into<String>, host: impl Into<String>, port: u16) -> Self {
        Self {
            id: None,
            name: name.into(),
            version: None,
            host: host.into(),
            port,
            protocol: Protocol::default(),
            tags: Vec::new(),
            metadata: BTreeMap::new(),
            weight: default_weight(),
            ttl: None,
        }
    }

    /// Chooses the instance id. Registering again with the same id updates
    /// the instance in place. Without it, an id is generated.
    pub fn id(mut self, id: InstanceId) -> Self {
        self.id = Some(id);
        self
    }

    /// The semantic version, e.g. `"1.4.2"` (checked at validation).
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// The protocol (HTTP by default).
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// Adds one tag.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Adds tags.
    pub fn tags<I, T>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.tags.extend(tags.into_iter().map(Into::into));
        self
    }

    /// Sets one metadata entry; any JSON value.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// The weight for weighted balancing (1 by default, 1 to 1,000,000).
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Heartbeat liveness: without a heartbeat for `ttl`, the instance is
    /// expired and deregistered.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The chosen id, if any.
    pub fn chosen_id(&self) -> Option<&InstanceId> {
        self.id.as_ref()
    }

    /// The service name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host (IP address or DNS name).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The version as given.
    pub fn version_str(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// The protocol.
    pub fn protocol_kind(&self) -> Protocol {
        self.protocol
    }

    /// The tags.
    pub fn tag_list(&self) -> &[String] {
        &self.tags
    }

    /// The metadata.
    pub fn metadata_map(&self) -> &BTreeMap<String, Value> {
        &self.metadata
    }

    /// The weight.
    pub fn weight_value(&self) -> u32 {
        self.weight
    }

    /// The heartbeat TTL, if any.
    pub fn ttl_value(&self) -> Option<Duration> {
        self.ttl
    }

    /// Checks every field and returns the parsed version.
    ///
    /// Names are 1 to 128 ASCII letters, digits, `-`, `_` or `.`, starting
    /// with a letter or digit; the host is an IP address or DNS name; the
    /// port is not 0; the version is semver; at most 64 tags of at most 128
    /// characters; metadata keys at most 128 characters and at most 64 KiB
    /// of metadata as JSON; weight 1 to 1,000,000; a TTL, when set, not 0.
    pub fn validate(&self) -> Result<Option<semver::Version>, ValidationError> {
        use ValidationErrorKind as K;
        validation::identifier(
            "name",
            &self.name,
            validation::MAX_NAME_LEN,
            &['-', '_', '.'],
        )?;
        validation::host(&self.host)?;
        if self.port == 0 {
            return Err(ValidationError::new("port", K::Zero));
        }
        let version = match &self.version {
            None => None,
            Some(v) => Some(semver::Version::parse(v).map_err(|e| {
                ValidationError::new("version", K::Unparsable(format!("{v:?}: {e}")))
            })?),
        };
        if self.tags.len() > validation::MAX_TAGS {
            return Err(ValidationError::new(
                "tags",
                K::TooMany {
                    max: validation::MAX_TAGS,
                    count: self.tags.len(),
                },
            ));
        }
        for tag in &self.tags {
            if tag.is_empty() {
                return Err(ValidationError::new("tags", K::Empty));
            }
            let len = tag.chars().count();
            if len > validation::MAX_TAG_LEN {
                return Err(ValidationError::new(
                    "tags",
                    K::TooLong {
                        max: validation::MAX_TAG_LEN,
                        len,
                    },
                ));
            }
        }
        for key in self.metadata.keys() {
            if key.is_empty() {
                return Err(ValidationError::new("metadata", K::Empty));
            }
            let len = key.chars().count();
            if len > validation::MAX_METADATA_KEY_LEN {
                return Err(ValidationError::new(
                    "metadata",
                    K::TooLong {
                        max: validation::MAX_METADATA_KEY_LEN,
                        len,
                    },
                ));
            }
        }
        let size = serde_json::to_vec(&self.metadata)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > validation::MAX_METADATA_BYTES {
            return Err(ValidationError::new(
                "metadata",
                K::Oversized {
                    max: validation::MAX_METADATA_BYTES,
                    size,
                },
            ));
        }
        if self.weight == 0 {
            return Err(ValidationError::new("weight", K::Zero));
        }
        if self.weight > validation::MAX_WEIGHT {
            return Err(ValidationError::new(
                "weight",
                K::TooLarge {
                    max: validation::MAX_WEIGHT.into(),
                    value: self.weight.into(),
                },
            ));
        }
        if self.ttl == Some(Duration::ZERO) {
            return Err(ValidationError::new("ttl", K::Zero));
        }
        Ok(version)
    }
}

// === ServiceInstance ===

/// One registered instance: its definition, id, registration time, last
/// heartbeat and health.
///
/// An immutable snapshot, cheap to clone (`Arc` inside); the registry hands
/// out a new snapshot when the instance changes. Only
/// [`last_heartbeat`](Self::last_heartbeat) is live: heartbeats update it in
/// every snapshot of the same registration without copying it.
#[derive(Clone)]
pub struct ServiceInstance {
    inner: Arc<Inner>,
}

struct Inner {
    id: InstanceId,
    definition: ServiceDefinition,
    version: Option<semver::Version>,
    registered_at: SystemTime,
    health: HealthStatus,
    liveness: Arc<Liveness>,
}

/// The parts of a registration that change without a new snapshot.
#[derive(Debug)]
pub(crate) struct Liveness {
    /// Unix time of the last heartbeat (or registration), in milliseconds.
    last_heartbeat_ms: AtomicU64,
    /// When the instance expires, in milliseconds after the registry's
    /// epoch (a `tokio::time::Instant`); `u64::MAX` when it has no TTL.
    pub(crate) deadline_ms: AtomicU64,
    /// The deadline of this registration's entry in the expiry heap.
    pub(crate) heap_ms: AtomicU64,
    /// When the last heartbeat arrived, in milliseconds after the registry's
    /// epoch; `u64::MAX` until the first one. TTL health checks read it.
    pub(crate) beat_ms: AtomicU64,
}

impl Liveness {
    pub(crate) fn new(now: SystemTime, deadline_ms: u64) -> Arc<Self> {
        Arc::new(Self {
            last_heartbeat_ms: AtomicU64::new(unix_ms(now)),
            deadline_ms: AtomicU64::new(deadline_ms),
            heap_ms: AtomicU64::new(u64::MAX),
            beat_ms: AtomicU64::new(u64::MAX),
        })
    }

    pub(crate) fn beat(&self, now: SystemTime, deadline_ms: u64) {
        self.last_heartbeat_ms
            .store(unix_ms(now), Ordering::Relaxed);
        self.deadline_ms.store(deadline_ms, Ordering::Release);
    }
}

pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The wall clock at the millisecond precision instances are stored with,
/// so a stored and reloaded instance compares equal.
pub(crate) fn system_now() -> SystemTime {
    from_unix_ms(unix_ms(SystemTime::now()))
}

fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

impl ServiceInstance {
    pub(crate) fn new(
        id: InstanceId,
        definition: ServiceDefinition,
        version: Option<semver::Version>,
        registered_at: SystemTime,
        health: HealthStatus,
        liveness: Arc<Liveness>,
    ) -> Self {
        let mut definition = definition;
        definition.id = Some(id.clone());
        Self {
            inner: Arc::new(Inner {
                id,
                definition,
                version,
                registered_at,
                health,
                liveness,
            }),
        }
    }

    /// The same registration with another health status.
    pub(crate) fn with_health(&self, health: HealthStatus) -> Self {
        let i = &self.inner;
        Self {
            inner: Arc::new(Inner {
                id: i.id.clone(),
                definition: i.definition.clone(),
                version: i.version.clone(),
                registered_at: i.registered_at,
                health,
                liveness: i.liveness.clone(),
            }),
        }
    }

    pub(crate) fn liveness(&self) -> &Arc<Liveness> {
        &self.inner.liveness
    }

    /// The instance id.
    pub fn id(&self) -> &InstanceId {
        &self.inner.id
    }

    /// The definition it was registered with (its id filled in).
    pub fn definition(&self) -> &ServiceDefinition {
        &self.inner.definition
    }

    /// The service name.
    pub fn name(&self) -> &str {
        &self.inner.definition.name
    }

    /// The parsed version, if one was given.
    pub fn version(&self) -> Option<&semver::Version> {
        self.inner.version.as_ref()
    }

    /// The host.
    pub fn host(&self) -> &str {
        &self.inner.definition.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.inner.definition.port
    }

    /// The protocol.
    pub fn protocol(&self) -> Protocol {
        self.inner.definition.protocol
    }

    /// The tags.
    pub fn tags(&self) -> &[String] {
        &self.inner.definition.tags
    }

    /// Whether the instance carries `tag`.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.inner.definition.tags.iter().any(|t| t == tag)
    }

    /// The metadata.
    pub fn metadata(&self) -> &BTreeMap<String, Value> {
        &self.inner.definition.metadata
    }

    /// The weight for weighted balancing.
    pub fn weight(&self) -> u32 {
        self.inner.definition.weight
    }

    /// The heartbeat TTL, if any.
    pub fn ttl(&self) -> Option<Duration> {
        self.inner.definition.ttl
    }

    /// When it was first registered.
    pub fn registered_at(&self) -> SystemTime {
        self.inner.registered_at
    }

    /// When its last heartbeat (or its registration) arrived.
    pub fn last_heartbeat(&self) -> SystemTime {
        from_unix_ms(
            self.inner
                .liveness
                .last_heartbeat_ms
                .load(Ordering::Relaxed),
        )
    }

    /// Its health status as the registry last heard it.
    pub fn health(&self) -> HealthStatus {
        self.inner.health
    }

    /// Whether it should receive traffic ([`HealthStatus::is_healthy`]).
    pub fn is_healthy(&self) -> bool {
        self.inner.health.is_healthy()
    }

    /// `host:port`, with brackets around an IPv6 address.
    pub fn authority(&self) -> String {
        let host = self.host();
        if host.contains(':') {
            format!("[{host}]:{}", self.port())
        } else {
            format!("{host}:{}", self.port())
        }
    }

    /// `scheme://host:port`, e.g. `http://localhost:3001`.
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.protocol().scheme(), self.authority())
    }
}

impl fmt::Debug for ServiceInstance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceInstance")
            .field("id", &self.inner.id)
            .field("name", &self.name())
            .field("address", &self.authority())
            .field("version", &self.inner.definition.version)
            .field("health", &self.inner.health)
            .finish_non_exhaustive()
    }
}

impl PartialEq for ServiceInstance {
    fn eq(&self, other: &Self) -> bool {
        self.inner.id == other.inner.id
            && self.inner.definition == other.inner.definition
            && self.inner.health == other.inner.health
            && self.inner.registered_at == other.inner.registered_at
    }
}

/// The serialized form of an instance: its definition's fields, flattened,
/// plus `registered_at_ms`, `last_heartbeat_ms` and `health`.
#[derive(Serialize, Deserialize)]
struct InstanceRecord {
    #[serde(flatten)]
    definition: ServiceDefinition,
    registered_at_ms: u64,
    #[serde(default)]
    last_heartbeat_ms: u64,
    #[serde(default)]
    health: HealthStatus,
}

impl Serialize for ServiceInstance {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        InstanceRecord {
            definition: self.inner.definition.clone(),
            registered_at_ms: unix_ms(self.inner.registered_at),
            last_heartbeat_ms: self
                .inner
                .liveness
                .last_heartbeat_ms
                .load(Ordering::Relaxed),
            health: self.inner.health,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ServiceInstance {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let record = InstanceRecord::deserialize(deserializer)?;
        let version = record
            .definition
            .validate()
            .map_err(serde::de::Error::custom)?;
        let id = record
            .definition
            .id
            .clone()
            .ok_or_else(|| serde::de::Error::missing_field("id"))?;
        let liveness = Liveness::new(from_unix_ms(record.last_heartbeat_ms), u64::MAX);
        Ok(Self::new(
            id,
            record.definition,
            version,
            from_unix_ms(record.registered_at_ms),
            record.health,
            liveness,
        ))
    }
}

mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(def: ServiceDefinition) -> &'static str {
        def.validate().unwrap_err().field()
    }

    #[test]
    fn validation_names_the_field() {
        let ok = || ServiceDefinition::new("svc", "localhost", 80);
        assert!(ok().validate().is_ok());
        assert_eq!(field(ServiceDefinition::new("", "localhost", 80)), "name");
        assert_eq!(
            field(ServiceDefinition::new("a".repeat(129), "h", 80)),
            "name"
        );
        assert_eq!(field(ServiceDefinition::new("a b", "h", 80)), "name");
        assert_eq!(field(ServiceDefinition::new("svc", "bad host", 80)), "host");
        assert_eq!(field(ok().version("one")), "version");
        assert_eq!(field(ServiceDefinition::new("svc", "h", 0)), "port");
        assert_eq!(field(ok().tags((0..65).map(|i| i.to_string()))), "tags");
        assert_eq!(field(ok().tag("")), "tags");
        assert_eq!(field(ok().metadata("big", "x".repeat(70_000))), "metadata");
        assert_eq!(field(ok().metadata("", 1)), "metadata");
        assert_eq!(field(ok().weight(0)), "weight");
        assert_eq!(field(ok().weight(1_000_001)), "weight");
        assert_eq!(field(ok().ttl(Duration::ZERO)), "ttl");
        assert_eq!(
            ok().version("1.2.3").validate().unwrap(),
            Some(semver::Version::new(1, 2, 3))
        );
    }

    #[test]
    fn instance_round_trips_through_json() {
        let def = ServiceDefinition::new("inventory", "::1", 3001)
            .version("1.0.0")
            .tags(["a", "b"])
            .metadata("capabilities", json!(["read", "write"]))
            .ttl(Duration::from_secs(5));
        let version = def.validate().unwrap();
        let id = InstanceId::new("inventory-1").unwrap();
        let now = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let instance = ServiceInstance::new(
            id,
            def,
            version,
            now,
            HealthStatus::Warning,
            Liveness::new(now, u64::MAX),
        );
        let text = serde_json::to_string(&instance).unwrap();
        let back: ServiceInstance = serde_json::from_str(&text).unwrap();
        assert_eq!(back, instance);
        assert_eq!(back.last_heartbeat(), now);
        assert_eq!(back.base_url(), "http://[::1]:3001");
        assert_eq!(back.ttl(), Some(Duration::from_secs(5)));
        // Invalid content is refused, not accepted.
        let bad = text.replace("3001", "0");
        assert!(serde_json::from_str::<ServiceInstance>(&bad).is_err());
    }

    #[test]
    fn protocol_names() {
        assert_eq!("HTTP".parse::<Protocol>().unwrap(), Protocol::Http);
        let err = "ftp".parse::<Protocol>().unwrap_err().to_string();
        assert!(err.contains("http, https, grpc, tcp, udp"), "{err}");
        for (p, name) in Protocol::ALL.iter().zip(Protocol::NAMES) {
            assert_eq!(p.as_str(), name);
        }
    }
}
