use crate::instance::InstanceId;
use crate::registry::RegistryError;

/// Why the health checker refused a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HealthError {
    /// A [`CheckSpec`](super::CheckSpec) is not usable; `reason` says why.
    #[error("invalid health check {check:?}: {reason}")]
    InvalidCheck {
        /// The check's name.
        check: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Two checks of one instance have the same name.
    #[error("two health checks are named {0:?}")]
    DuplicateCheck(String),
    /// The [`HealthCheckerConfig`](super::HealthCheckerConfig) is not usable.
    #[error("invalid health checker config: {reason}")]
    InvalidConfig {
        /// What is wrong with it.
        reason: String,
    },
    /// The check kind cannot reach this instance (e.g. an HTTP check on an
    /// `https` instance, which needs TLS this crate does not link).
    #[error("a {check} check cannot reach instance {instance}: {reason}")]
    Unsupported {
        /// The check's name.
        check: String,
        /// The instance.
        instance: InstanceId,
        /// Why not.
        reason: String,
    },
    /// The instance is not registered.
    #[error("instance {0} is not registered")]
    NotRegistered(InstanceId),
    /// No health checks are running for the instance.
    #[error("no health checks are running for instance {0}")]
    NotChecked(InstanceId),
    /// The instance has no TTL check of that name.
    #[error("instance {instance} has no ttl check named {check:?}")]
    NoSuchTtlCheck {
        /// The instance.
        instance: InstanceId,
        /// The name asked for.
        check: String,
    },
    /// The checker was used outside a tokio runtime.
    #[error("the health checker needs a tokio runtime")]
    NoRuntime,
    /// Writing a status to the registry failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}
