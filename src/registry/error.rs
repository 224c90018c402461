use crate::instance::InstanceId;
use crate::registry::BackendError;
use crate::validation::ValidationError;

/// A registry operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The definition was refused; the error names the field.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// No instance has this id.
    #[error("no instance with id {0}")]
    NotFound(InstanceId),
    /// The backend failed to store or load. For `register` and `deregister`,
    /// the change is applied in memory but may not be durable.
    #[error("registry backend: {0}")]
    Backend(#[from] BackendError),
    /// The registry was built outside a tokio runtime, which it needs for
    /// TTL expiry.
    #[error("the registry must be built inside a tokio runtime")]
    NoRuntime,
}
