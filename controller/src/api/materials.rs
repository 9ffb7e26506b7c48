//! `status.materials` and `status.outputs`: what a run consumed and produced, as recorded.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Source;

/// The recorded materials of a run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Materials {
    /// Datasets, declared and/or reported, each with its source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datasets: Vec<DatasetMaterial>,
    /// Distinct container images the workers ran, with observed digests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageMaterial>,
}

/// A dataset as recorded.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatasetMaterial {
    /// Dataset name.
    pub name: String,
    /// Where it lives (from the spec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Digest, `sha256:<hex>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Exactly who gave `digest`: `Declared` (spec.datasets), `Observed` (hashed by `provenant
    /// attest`), `Reported` (the workload); all of them gave the same digest. A digest the workload
    /// supplies for a dataset the spec declared without one is `Reported` only. Without a digest:
    /// `Declared` (the spec named the dataset).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<Source>,
}

/// A container image as recorded.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageMaterial {
    /// Image reference as written in the pod spec.
    pub image: String,
    /// Digest the kubelet reported, `sha256:<hex>`.
    pub digest: String,
}

/// A model artifact the run produced.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutputRecord {
    /// Reference as reported, `repository@sha256:<hex>`.
    pub uri: String,
    /// The repository part (inside `spec.output.repository`).
    pub repository: String,
    /// Manifest digest, `sha256:<hex>`.
    pub digest: String,
    /// Whether the controller confirmed the manifest exists in the registry with this digest.
    #[serde(default)]
    pub verified: bool,
}
