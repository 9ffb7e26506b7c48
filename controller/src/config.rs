//! Controller configuration: the file mounted from the `provenant-config` ConfigMap
//! (`/etc/provenant/config.yaml`), loaded once at start. Every key is documented in
//! docs/operations.md. Without a file, the embedded defaults (the same YAML as
//! `config/default/controller-config.yaml`) apply.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Toleration;
use serde::{Deserialize, Serialize};

use crate::names::{is_dns_label, is_label_value, is_qualified_name};
use crate::repository_policy::{self, RepositoryRule};
use crate::storage::Encoding;

/// The configuration shipped in `config/default`, compiled in as the defaults.
pub const DEFAULT_CONFIG_YAML: &str = include_str!("../../config/default/controller-config.yaml");

/// The controller's configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ControllerConfig {
    /// Accelerator type name (as used in `spec.accelerator.type`) → how to schedule it.
    #[serde(default)]
    pub accelerator_profiles: BTreeMap<String, AcceleratorProfile>,
    /// Provenance of succeeded runs.
    #[serde(default)]
    pub provenance: ProvenanceConfig,
    /// What worker pods may use.
    #[serde(default)]
    pub workers: WorkersConfig,
}

// ---- workers: (issue 14, worker security) ----

/// `workers:` settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkersConfig {
    /// Volume types (`emptyDir`, `persistentVolumeClaim`, ...) a run's `spec.volumes` may use;
    /// a run with any other is refused before a pod is created. hostPath is never allowed.
    #[serde(default = "default_volume_types")]
    pub allowed_volume_types: Vec<String>,
}

impl Default for WorkersConfig {
    fn default() -> Self {
        WorkersConfig {
            allowed_volume_types: default_volume_types(),
        }
    }
}

fn default_volume_types() -> Vec<String> {
    crate::api::volumes::DEFAULT_ALLOWED_VOLUME_TYPES
        .iter()
        .map(|t| t.to_string())
        .collect()
}

impl WorkersConfig {
    /// Every allowed type is a volume type Kubernetes knows, and none is hostPath.
    fn check(&self) -> Result<(), (String, String)> {
        let known = crate::api::volumes::known_types();
        for (i, t) in self.allowed_volume_types.iter().enumerate() {
            let field = format!("workers.allowedVolumeTypes[{i}]");
            if t == "hostPath" {
                return Err((
                    field,
                    "hostPath is never allowed: it gives a tenant's workload the node's file system (the CRD refuses it too)".into(),
                ));
            }
            if !known.iter().any(|k| k == t) {
                return Err((
                    field,
                    format!(
                        "{t:?} is not a Kubernetes volume type (one of {})",
                        known.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
}

// ---- end workers: ----

/// `provenance:` settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProvenanceConfig {
    /// Sign and attach provenance for succeeded runs. While false, the finalizer of a finished
    /// run is released as soon as its materials are recorded, and `status.provenance.state` is
    /// `Disabled`.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `runDetails.builder.id` of the statements.
    #[serde(default = "default_builder_id")]
    pub builder_id: String,
    /// Name of this cluster, appended to the builder id (`<builderId>/<clusterName>`) so that
    /// verifiers can tell clusters apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    /// Secret (in the controller's namespace) holding `cosign.key`, `cosign.password`, `cosign.pub`.
    #[serde(default = "default_signing_secret")]
    pub signing_key_secret: String,
    /// Where and how attestations are written.
    #[serde(default)]
    pub registry: RegistryConfig,
    /// Which encodings attestations are written in: `dsse` (cosign `.att`/`.sig` and an in-toto
    /// referrer), `sigstore-bundle` (a Sigstore bundle v0.3 referrer) or `both`.
    #[serde(default, deserialize_with = "encoding")]
    pub encoding: Encoding,
    /// Which namespaces may publish to which repositories, and with which credentials
    /// (`repository_policy.rs`). Empty: single-tenant, any repository.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repository_policy: Vec<RepositoryRule>,
}

/// `provenance.registry:` settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistryConfig {
    /// A `kubernetes.io/dockerconfigjson` Secret (in the controller's namespace) with registry
    /// credentials; anonymous access when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
    /// Registries (`host[:port]`) reached over plain HTTP. Everything else is HTTPS.
    #[serde(default)]
    pub insecure: Vec<String>,
    /// Attempts for a transient registry error (with capped exponential backoff) before the
    /// reconcile is retried later.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    // Fairness between tenants (issue 14, point 5): see [`RegistryConfig::check_fairness`].
    /// Bound on connecting (TCP + TLS) to a registry, per request.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_seconds: u32,
    /// Bound on one whole registry request (connect, send, the answer read), per attempt.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_seconds: u32,
    /// Provenance passes in progress at once per registry host; unset: a quarter of
    /// `--provenance-workers` (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_per_host: Option<u32>,
    /// Provenance passes in progress at once for the runs of one namespace; unset: no bound
    /// (single tenant). Set it when tenants can point runs at registry hosts of their own: it
    /// bounds what one namespace can hold across many hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_per_namespace: Option<u32>,
    /// Wait before a run's provenance is tried again after its first failed pass; doubled (with
    /// jitter) after each further one, up to `retryMaxSeconds`.
    #[serde(default = "default_retry_initial")]
    pub retry_initial_seconds: u32,
    #[serde(default = "default_retry_max")]
    pub retry_max_seconds: u32,
    /// Passes that may meet 401/403 (credentials missing, rotating, not allowed) before the run
    /// fails with `RegistryUnauthorized`.
    #[serde(default = "default_unauthorized_attempts")]
    pub unauthorized_attempts: u32,
}

impl Default for ProvenanceConfig {
    fn default() -> Self {
        ProvenanceConfig {
            enabled: true,
            builder_id: default_builder_id(),
            cluster_name: None,
            signing_key_secret: default_signing_secret(),
            registry: RegistryConfig::default(),
            encoding: Encoding::default(),
            repository_policy: Vec::new(),
        }
    }
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            credentials_secret: None,
            insecure: Vec::new(),
            attempts: default_attempts(),
            connect_timeout_seconds: default_connect_timeout(),
            request_timeout_seconds: default_request_timeout(),
            concurrency_per_host: None,
            concurrency_per_namespace: None,
            retry_initial_seconds: default_retry_initial(),
            retry_max_seconds: default_retry_max(),
            unauthorized_attempts: default_unauthorized_attempts(),
        }
    }
}

fn yes() -> bool {
    true
}

/// `provenance.encoding`, refused with the field's name and the accepted values.
fn encoding<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Encoding, D::Error> {
    Encoding::deserialize_named("provenance.encoding", d)
}
/// Default `runDetails.builder.id` of the controller's statements.
pub const DEFAULT_BUILDER_ID: &str = "https://provenant.dev/controller/v1";

fn default_builder_id() -> String {
    DEFAULT_BUILDER_ID.to_string()
}
fn default_signing_secret() -> String {
    "provenant-signing-key".to_string()
}
fn default_attempts() -> u32 {
    2
}
fn default_connect_timeout() -> u32 {
    5
}
fn default_request_timeout() -> u32 {
    20
}
fn default_retry_initial() -> u32 {
    2
}
fn default_retry_max() -> u32 {
    300
}
fn default_unauthorized_attempts() -> u32 {
    5
}

// Fairness between tenants (issue 14, point 5): the registry bounds, checked.
impl RegistryConfig {
    /// Provenance passes at once per registry host, for `workers` publish workers.
    pub fn concurrency_per_host(&self, workers: usize) -> usize {
        match self.concurrency_per_host {
            Some(n) => n as usize,
            None => (workers / 4).max(1),
        }
    }

    /// The bounds must be positive (a zero timeout fails every request; zero attempts or
    /// concurrency would never publish) and the backoff's cap at least its start.
    fn check_fairness(&self) -> Result<(), (String, String)> {
        let field = |f: &str| format!("provenance.registry.{f}");
        let positive = [
            ("attempts", Some(self.attempts)),
            ("connectTimeoutSeconds", Some(self.connect_timeout_seconds)),
            ("requestTimeoutSeconds", Some(self.request_timeout_seconds)),
            ("concurrencyPerHost", self.concurrency_per_host),
            ("concurrencyPerNamespace", self.concurrency_per_namespace),
            ("retryInitialSeconds", Some(self.retry_initial_seconds)),
            ("unauthorizedAttempts", Some(self.unauthorized_attempts)),
        ];
        for (name, value) in positive {
            if value == Some(0) {
                return Err((field(name), "must be at least 1".into()));
            }
        }
        if self.retry_max_seconds < self.retry_initial_seconds {
            return Err((
                field("retryMaxSeconds"),
                format!(
                    "{} is less than retryInitialSeconds ({})",
                    self.retry_max_seconds, self.retry_initial_seconds
                ),
            ));
        }
        Ok(())
    }
}

/// How one accelerator type is scheduled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AcceleratorProfile {
    /// Extended resource requested (and limited) per worker, e.g. `nvidia.com/gpu`, `google.com/tpu`.
    pub resource_name: String,
    /// Node labels that select the pool.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    /// Taints of the pool that workers tolerate.
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
    /// Node label that carries the slice topology (GKE TPU). When set, a run must give
    /// `spec.accelerator.topology`, and it is added to the node selector under this label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_label: Option<String>,
}

/// The configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read controller config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("controller config {origin} is malformed: {message}")]
    Parse { origin: String, message: String },
    #[error("controller config {origin}: {field}: {reason}")]
    Invalid {
        origin: String,
        field: String,
        reason: String,
    },
}

impl ControllerConfig {
    /// The embedded defaults.
    pub fn defaults() -> Self {
        // The embedded file is checked by the unit tests below, so this cannot fail at run time.
        Self::from_yaml(DEFAULT_CONFIG_YAML, "<embedded defaults>")
            .expect("embedded default config is valid")
    }

    /// Load the file at `path`, or the embedded defaults when `path` is None.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let Some(path) = path else {
            return Ok(Self::defaults());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_yaml(&text, &path.display().to_string())
    }

    /// Parse and check a configuration document; `origin` names it in errors.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config: ControllerConfig = if text.trim().is_empty() {
            ControllerConfig::default()
        } else {
            serde_saphyr::from_str(text).map_err(|e| ConfigError::Parse {
                origin: origin.to_string(),
                message: e.to_string(),
            })?
        };
        config
            .check()
            .map_err(|(field, reason)| ConfigError::Invalid {
                origin: origin.to_string(),
                field,
                reason,
            })?;
        Ok(config)
    }

    /// Semantic checks serde cannot do; returns the offending field and why.
    fn check(&self) -> Result<(), (String, String)> {
        self.workers.check()?;
        self.provenance.registry.check_fairness()?;
        for (name, profile) in &self.accelerator_profiles {
            let field = |f: &str| format!("acceleratorProfiles.{name}.{f}");
            if !is_dns_label(name) {
                return Err((
                    format!("acceleratorProfiles.{name}"),
                    "profile names are used in spec.accelerator.type and must be DNS labels (lowercase letters, digits, '-', at most 63)".into(),
                ));
            }
            if !is_qualified_name(&profile.resource_name) || !profile.resource_name.contains('/') {
                return Err((
                    field("resourceName"),
                    format!(
                        "{:?} is not an extended resource name like nvidia.com/gpu",
                        profile.resource_name
                    ),
                ));
            }
            for (key, value) in &profile.node_selector {
                if !is_qualified_name(key) {
                    return Err((
                        field("nodeSelector"),
                        format!("{key:?} is not a valid label key"),
                    ));
                }
                if !is_label_value(value) {
                    return Err((
                        field(&format!("nodeSelector.{key}")),
                        format!("{value:?} is not a valid label value"),
                    ));
                }
            }
            if let Some(label) = &profile.topology_label
                && !is_qualified_name(label)
            {
                return Err((
                    field("topologyLabel"),
                    format!("{label:?} is not a valid label key"),
                ));
            }
            for (i, t) in profile.tolerations.iter().enumerate() {
                let op = t.operator.as_deref().unwrap_or("Equal");
                if op != "Equal" && op != "Exists" {
                    return Err((
                        field(&format!("tolerations[{i}].operator")),
                        format!("{op:?} must be Equal or Exists"),
                    ));
                }
                if let Some(effect) = t.effect.as_deref()
                    && !["NoSchedule", "PreferNoSchedule", "NoExecute", ""].contains(&effect)
                {
                    return Err((
                        field(&format!("tolerations[{i}].effect")),
                        format!("{effect:?} must be NoSchedule, PreferNoSchedule or NoExecute"),
                    ));
                }
                if op == "Exists" && t.value.as_deref().is_some_and(|v| !v.is_empty()) {
                    return Err((
                        field(&format!("tolerations[{i}].value")),
                        "must be empty when operator is Exists".into(),
                    ));
                }
            }
        }
        self.check_repository_policy()?;
        Ok(())
    }
}

// ----- provenance.repositoryPolicy (issue 14, point 2) -----

impl ControllerConfig {
    fn check_repository_policy(&self) -> Result<(), (String, String)> {
        repository_policy::check(&self.provenance.repository_policy)
    }

    /// The Secrets named by `provenance.repositoryPolicy[].credentialsSecret`, each once.
    pub fn scoped_credentials_secrets(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .provenance
            .repository_policy
            .iter()
            .filter_map(|r| r.credentials_secret.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

#[cfg(test)]
mod tests;
