//! Where an instance is reached: the scheme and authority that the HTTP
//! endpoints write into each request's URI.

use std::fmt;

use http::uri::{Authority, PathAndQuery, Scheme, Uri};

use crate::instance::ServiceInstance;

/// A request could not be addressed to its instance.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot address a request to instance {instance}: {reason}")]
pub struct AddressError {
    instance: String,
    reason: String,
}

impl AddressError {
    pub(crate) fn new(instance: &str, reason: impl Into<String>) -> Self {
        Self {
            instance: instance.to_owned(),
            reason: reason.into(),
        }
    }
}

/// The scheme and authority of one instance, parsed once when its endpoint
/// is made, so that rewriting a request's URI parses nothing.
#[derive(Clone)]
pub(crate) struct Target {
    scheme: Scheme,
    /// `None` if the instance's address is not a valid URI authority (the
    /// registry's validation makes that unlikely); requests then fail.
    authority: Option<Authority>,
    id: String,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("instance", &self.id)
            .field("scheme", &self.scheme)
            .field("authority", &self.authority)
            .finish()
    }
}

impl Target {
    pub(crate) fn of(instance: &ServiceInstance) -> Self {
        let scheme = match instance.protocol().scheme() {
            "https" => Scheme::HTTPS,
            _ => Scheme::HTTP,
        };
        Self {
            scheme,
            authority: instance.authority().parse().ok(),
            id: instance.id().to_string(),
        }
    }

    /// The instance's id.
    #[cfg_attr(not(feature = "tonic"), allow(dead_code))]
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// `uri` with the instance's scheme and authority, keeping its path and
    /// query (`/` when it has none).
    pub(crate) fn rewrite(&self, uri: &Uri) -> Result<Uri, AddressError> {
        let authority = self
            .authority
            .clone()
            .ok_or_else(|| AddressError::new(&self.id, "its address is not a valid authority"))?;
        let path = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(authority)
            .path_and_query(path)
            .build()
            .map_err(|e| AddressError::new(&self.id, e.to_string()))
    }

    /// The instance's base URI, `scheme://authority/`.
    #[cfg_attr(not(feature = "tonic"), allow(dead_code))]
    pub(crate) fn base(&self) -> Result<Uri, AddressError> {
        self.rewrite(&Uri::from_static("/"))
    }
}
