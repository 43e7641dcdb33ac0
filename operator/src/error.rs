//! The operator's one error type. Each variant maps to a condition reason in
//! [`Error::reason`], so a failure shows up the same way in status, Events and metrics.

use crate::builders::BuildError;

/// Everything a reconcile can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A child object could not be built.
    #[error("building children: {0}")]
    Build(#[from] BuildError),
    /// The broker admin API failed or is unreachable.
    #[error("admin API at {endpoint}: {source}")]
    Admin {
        /// Address the call went to.
        endpoint: String,
        /// What went wrong.
        #[source]
        source: crate::admin::AdminError,
    },
    /// The Topic finalizer step (add, apply, clean up, remove) failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// A (de)serialization the operator relies on failed.
    #[error("serialization: {0}")]
    Serde(#[from] serde_json::Error),
}

impl Error {
    /// CamelCase reason used in conditions and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubernetesApiError",
            Error::Build(_) => "InvalidResource",
            Error::Admin { source, .. } => source.reason(),
            Error::Finalizer(_) => "FinalizerError",
            Error::Serde(_) => "SerializationError",
        }
    }
}

/// Result alias of the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
