//! Controller configuration: the file mounted from the `provenant-config` ConfigMap
//! (`/etc/provenant/config.yaml`), loaded once at start. Every key is documented in
//! docs/operations.md. Without a file, the embedded defaults (the same YAML as
//! `config/default/controller-config.yaml`) apply.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Toleration;
use serde::{Deserialize, Serialize};

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
}

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
}

impl Default for ProvenanceConfig {
    fn default() -> Self {
        ProvenanceConfig {
            enabled: true,
            builder_id: default_builder_id(),
            cluster_name: None,
            signing_key_secret: default_signing_secret(),
            registry: RegistryConfig::default(),
        }
    }
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            credentials_secret: None,
            insecure: Vec::new(),
            attempts: default_attempts(),
        }
    }
}

fn yes() -> bool {
    true
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
    4
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
        Ok(())
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A Kubernetes qualified name: optional DNS-subdomain prefix and `/`, then a name of at most 63
/// alphanumerics, '-', '_' or '.', starting and ending alphanumeric.
fn is_qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    let prefix_ok =
        prefix.is_none_or(|p| !p.is_empty() && p.len() <= 253 && p.split('.').all(is_dns_label));
    prefix_ok && !name.is_empty() && is_label_value(name)
}

fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_files_get_clear_errors() {
        let err = ControllerConfig::from_yaml("acceleratorProfiles: [", "cfg.yaml").unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with("controller config cfg.yaml is malformed"),
            "{err}"
        );

        let err = ControllerConfig::from_yaml("acceleratorProfile: {}", "cfg.yaml").unwrap_err();
        assert!(err.to_string().contains("acceleratorProfile"), "{err}");

        let err = ControllerConfig::from_yaml(
            "acceleratorProfiles:\n  gpu:\n    resourceName: gpu\n",
            "cfg.yaml",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "controller config cfg.yaml: acceleratorProfiles.gpu.resourceName: \"gpu\" is not an extended resource name like nvidia.com/gpu"
        );

        let err = ControllerConfig::from_yaml(
            "acceleratorProfiles:\n  Big_GPU:\n    resourceName: nvidia.com/gpu\n",
            "cfg.yaml",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("acceleratorProfiles.Big_GPU: profile names"),
            "{err}"
        );

        let err = ControllerConfig::from_yaml(
            "acceleratorProfiles:\n  gpu:\n    resourceName: nvidia.com/gpu\n    tolerations: [{key: a, operator: Maybe}]\n",
            "cfg.yaml",
        )
        .unwrap_err();
        assert!(err.to_string().contains("tolerations[0].operator"), "{err}");

        let err =
            ControllerConfig::load(Some(Path::new("/nonexistent/provenant.yaml"))).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read controller config /nonexistent/provenant.yaml"),
            "{err}"
        );
    }

    #[test]
    fn empty_file_means_no_profiles() {
        let config = ControllerConfig::from_yaml("", "cfg.yaml").unwrap();
        assert!(config.accelerator_profiles.is_empty());
    }
}
