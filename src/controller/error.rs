//! The controller's one error type, and how each failure is retried.

use std::time::Duration;

use kube::runtime::controller::Action;

use crate::keyset::EncodeError;

/// Why a reconcile or a key-set publish failed. Invalid specs are not errors:
/// the plan reports them in status and waits for the object to change.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed; `action` says which.
    #[error("{action}: {source}")]
    Kube {
        /// What the controller was doing, such as `apply Secret`.
        action: &'static str,
        /// The client error (boxed: it is large, and errors travel through every `?`).
        #[source]
        source: Box<kube::Error>,
    },
    /// The key set could not be encoded; a record breaks the format.
    #[error("encoding key set: {0}")]
    Encode(#[from] EncodeError),
    /// An object lacks a field the API server always sets.
    #[error("object has no {0}")]
    MissingField(&'static str),
    /// A patch body could not be built.
    #[error("building patch: {0}")]
    Serialize(#[from] serde_json::Error),
    /// A key set's generation counter reached its maximum; it cannot be written again.
    #[error("key set {0}: generation counter exhausted")]
    GenerationExhausted(String),
    /// A guarded write found the object changed since it was read (a failed
    /// JSON-patch `test`, which a real API server answers with 422).
    #[error("{action}: the object changed since it was read")]
    Changed {
        /// What the controller was doing, such as `add finalizer`.
        action: &'static str,
    },
}

impl Error {
    /// A closure wrapping a kube error with what was being done.
    pub(crate) fn kube(action: &'static str) -> impl FnOnce(kube::Error) -> Error {
        move |source| Error::Kube { action, source: Box::new(source) }
    }

    /// A short label for metrics and logs.
    #[must_use]
    pub fn label(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kube",
            Error::Encode(_) => "encode",
            Error::MissingField(_) => "missing_field",
            Error::Serialize(_) => "serialize",
            Error::GenerationExhausted(_) => "generation_exhausted",
            Error::Changed { .. } => "conflict",
        }
    }

    /// Whether this is a conflict (HTTP 409, or a guarded patch whose `test`
    /// failed): retry at once.
    #[must_use]
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Changed { .. })
            || matches!(self, Error::Kube { source, .. } if matches!(source.as_ref(), kube::Error::Api(status) if status.code == 409))
    }
}

/// How soon to retry after `error`. API failures are transient; the others
/// need a change (of the object or of keyward) and are retried slowly.
#[must_use]
pub fn retry_after(error: &Error) -> Action {
    match error {
        Error::Changed { .. } => Action::requeue(Duration::from_millis(200)),
        Error::Kube { .. } if error.is_conflict() => Action::requeue(Duration::from_millis(200)),
        Error::Kube { .. } => Action::requeue(Duration::from_secs(5)),
        Error::Encode(_) | Error::MissingField(_) | Error::Serialize(_) | Error::GenerationExhausted(_) => {
            Action::requeue(Duration::from_secs(300))
        }
    }
}
