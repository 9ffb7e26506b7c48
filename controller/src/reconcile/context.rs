//! What every step of a reconcile shares: the [`Context`] (client, configuration, events,
//! metrics, the provenance side) and the [`Error`] a step fails with.

use std::sync::Arc;

use kube::runtime::events::Recorder;

use super::publisher::Publisher;
use super::queue::ProvenanceQueue;
use super::revocation::Watched;
use crate::config::ControllerConfig;
use crate::metrics::{Metrics, reason};

/// Field manager of every write provenant makes.
pub const FIELD_MANAGER: &str = "provenant";

/// Everything a reconcile needs.
pub struct Context {
    pub client: kube::Client,
    pub config: Arc<ControllerConfig>,
    pub recorder: Recorder,
    pub metrics: Metrics,
    /// Signs and attaches provenance; None when provenance is disabled.
    pub publisher: Option<Arc<Publisher>>,
    /// The controller's own namespace (signing key, credentials): no run may execute there.
    pub controller_namespace: String,
    /// Succeeded runs handed over to the provenance workers.
    pub queue: ProvenanceQueue,
    /// The MaterialRevocations in force (new runs declaring a revoked material are refused).
    pub revocations: Watched,
}

/// A reconcile failed; it is retried. Variant names read well as metric labels.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API request failed ({action}): {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error("TrainingRun has no namespace")]
    NoNamespace,
    /// The pass read an older version of the run than the API server holds (a cache that has
    /// not seen the last status write): it starts again rather than act on it.
    #[error("the cached TrainingRun is older than the API server's; reconciling again")]
    Stale,
    /// A request body could not be written (a bug, never input).
    #[error("cannot encode {what}: {reason}")]
    Encode { what: &'static str, reason: String },
    /// The pass panicked: contained to this run, which is retried (`contain.rs`).
    #[error("{step} panicked: {message}")]
    Panicked { step: &'static str, message: String },
    /// The cache of MaterialRevocations has not filled yet: a run that has not started waits
    /// rather than start past a revocation not seen yet.
    #[error(
        "the MaterialRevocation cache is not synced yet (is the CRD installed? kubectl apply -f crds/)"
    )]
    RevocationsNotSynced,
    /// A listed page of provenance records could not be read (lineage).
    #[error("cannot read the provenance records: {0}")]
    Records(String),
}

impl Error {
    /// The `reason` label of `provenant_reconcile_errors_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { .. } if self.is_conflict() => reason::CONFLICT,
            Error::Stale => reason::CONFLICT,
            Error::Kube { .. } => reason::KUBE_API,
            Error::NoNamespace => reason::NO_NAMESPACE,
            Error::Encode { .. } => reason::ENCODE,
            Error::Panicked { .. } => reason::PANIC,
            Error::RevocationsNotSynced => reason::REVOCATIONS_NOT_SYNCED,
            Error::Records(_) => reason::RECORDS,
        }
    }

    /// A write refused because the object changed since it was read (HTTP 409): the cached copy
    /// was stale. Routine under load; the newer version is on its way through the watch.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Stale)
            || matches!(self, Error::Kube { source: kube::Error::Api(s), .. } if s.code == 409)
    }

    /// A write refused because the object would be too large to store: 413 (over the API
    /// server's 3 MiB request limit), or 500 from etcd's request limit (1.5 MiB by default) or
    /// the API server's 2 MiB to etcd. Retrying cannot help.
    pub fn is_too_large(&self) -> bool {
        matches!(self, Error::Kube { source: kube::Error::Api(s), .. }
            if s.code == 413
                || (s.code == 500
                    && (s.message.contains("request is too large")
                        || s.message.contains("larger than max"))))
    }
}

/// Map a kube error to [`Error::Kube`], naming what was being done.
pub fn kube_err(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let action = action.into();
    move |source| Error::Kube { action, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> Error {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": code, "reason": "Conflict", "message": "the object has been modified",
        }))
        .expect("a Status");
        kube_err("update finalizers")(kube::Error::Api(Box::new(status)))
    }

    #[test]
    fn conflicts_are_told_apart_from_api_failures() {
        let conflict = api_error(409);
        assert!(conflict.is_conflict());
        assert_eq!(conflict.metric_label(), "Conflict");
        assert!(
            conflict.to_string().contains("update finalizers"),
            "{conflict}"
        );
        for code in [403, 404, 500, 503] {
            let other = api_error(code);
            assert!(!other.is_conflict(), "{code}");
            assert_eq!(other.metric_label(), "KubeApi", "{code}");
        }
        assert!(!Error::NoNamespace.is_conflict());
    }

    #[test]
    fn too_large_is_told_apart_from_other_server_errors() {
        let error = |code: u16, message: &str| {
            let status: kube::core::Status = serde_json::from_value(serde_json::json!({
                "status": "Failure", "code": code, "message": message,
            }))
            .expect("a Status");
            kube_err("write status")(kube::Error::Api(Box::new(status)))
        };
        // As the real server answers (measured: 1,024 workers with 60 metrics each; 2.5 MB).
        assert!(error(413, "Request entity too large: limit is 3145728").is_too_large());
        assert!(
            error(500, "rpc error: code = ResourceExhausted desc = trying to send message larger than max (2558076 vs. 2097152)")
                .is_too_large()
        );
        assert!(error(500, "etcdserver: request is too large").is_too_large());
        assert!(!error(500, "etcdserver: leader changed").is_too_large());
        assert!(!error(409, "the object has been modified").is_too_large());
    }
}
