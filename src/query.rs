//! [`Query`]: which instances a caller wants.
//!
//! A query matches on the service name, a semver requirement, all of a set of
//! tags, metadata equality, the protocol and health. Every condition left out
//! matches everything. A query with a name is answered from the registry's
//! name index; one without a name looks at every instance.
//!
//! # Examples
//!
//! ```
//! use fluxor_registry::{Protocol, Query};
//!
//! let query = Query::name("inventory-service")
//!     .version("^1.0")?
//!     .tag("core")
//!     .metadata("region", "us-east-1")
//!     .protocol(Protocol::Http)
//!     .healthy_only();
//! assert_eq!(query.service_name(), Some("inventory-service"));
//! # Ok::<(), fluxor_registry::ValidationError>(())
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::instance::{Protocol, ServiceInstance};
use crate::validation::{ValidationError, ValidationErrorKind};

/// Which instances to find; see the [module docs](self).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Query {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<semver::VersionReq>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tags: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    metadata: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    protocol: Option<Protocol>,
    #[serde(default)]
    healthy_only: bool,
}

impl Query {
    /// Instances of the service `name`.
    pub fn name(name: impl Into<String>) -> Self {
        Self {
            name: Some(name.into()),
            ..Self::default()
        }
    }

    /// Every instance of every service.
    pub fn any() -> Self {
        Self::default()
    }

    /// Only instances whose version satisfies the semver requirement `req`
    /// (e.g. `"^1.2"`, `">=1.0, <2"`). Instances without a version never
    /// match a version requirement.
    pub fn version(self, req: &str) -> Result<Self, ValidationError> {
        let req = semver::VersionReq::parse(req).map_err(|e| {
            ValidationError::new(
                "version",
                ValidationErrorKind::Unparsable(format!("{req:?}: {e}")),
            )
        })?;
        Ok(self.version_req(req))
    }

    /// Like [`version`](Self::version), with a parsed requirement.
    pub fn version_req(mut self, req: semver::VersionReq) -> Self {
        self.version = Some(req);
        self
    }

    /// Only instances carrying `tag` (all tags given must be present).
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Only instances carrying every one of `tags`.
    pub fn tags<I, T>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.tags.extend(tags.into_iter().map(Into::into));
        self
    }

    /// Only instances whose metadata `key` equals `value`.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Only instances speaking `protocol`.
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = Some(protocol);
        self
    }

    /// Only healthy instances ([`HealthStatus::is_healthy`]).
    ///
    /// [`HealthStatus::is_healthy`]: crate::HealthStatus::is_healthy
    pub fn healthy_only(mut self) -> Self {
        self.healthy_only = true;
        self
    }

    /// The service name asked for, if any.
    pub fn service_name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Whether only healthy instances match.
    pub fn is_healthy_only(&self) -> bool {
        self.healthy_only
    }

    /// Whether `instance` satisfies every condition of the query.
    pub fn matches(&self, instance: &ServiceInstance) -> bool {
        self.matches_definition(instance) && (!self.healthy_only || instance.is_healthy())
    }

    /// Every condition but health.
    pub(crate) fn matches_definition(&self, instance: &ServiceInstance) -> bool {
        if self
            .name
            .as_deref()
            .is_some_and(|name| instance.name() != name)
        {
            return false;
        }
        if let Some(req) = &self.version {
            match instance.version() {
                Some(v) if req.matches(v) => {}
                _ => return false,
            }
        }
        if self.protocol.is_some_and(|p| instance.protocol() != p) {
            return false;
        }
        if !self.tags.iter().all(|t| instance.has_tag(t)) {
            return false;
        }
        self.metadata
            .iter()
            .all(|(k, v)| instance.metadata().get(k) == Some(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_version_requirement_names_the_field() {
        let err = Query::name("x").version("not a req").unwrap_err();
        assert_eq!(err.field(), "version");
    }

    #[test]
    fn query_serializes() {
        let q = Query::name("x")
            .version(">=1.0")
            .unwrap()
            .tag("a")
            .healthy_only();
        let text = serde_json::to_string(&q).unwrap();
        assert_eq!(serde_json::from_str::<Query>(&text).unwrap(), q);
    }
}
