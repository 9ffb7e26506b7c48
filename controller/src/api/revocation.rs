//! The `MaterialRevocation` API (`provenant.dev/v1alpha1`, cluster-scoped): a security team
//! revokes a dataset, an image or a model by digest, with a reason. The controller finds every
//! model that depends on it (transitively through base models), reports them here, attaches a
//! signed revocation attestation to each, marks their runs, and refuses new runs that declare
//! the material (docs/lineage.md, "Revocation lifecycle"). Deleting it reinstates them.
//!
//! The names match the predicate's (`provenance::revocation`): `material.type` is a
//! [`MaterialType`], the object is what the predicate's `revocation` refers to.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// At most this many affected models are listed in the status (`affectedCount` counts all).
pub const MAX_LISTED: usize = 1000;

/// A revoked material: every model trained on it, directly or through base models, is revoked.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "provenant.dev",
    version = "v1alpha1",
    kind = "MaterialRevocation",
    plural = "materialrevocations",
    singular = "materialrevocation",
    shortname = "mrev",
    status = "MaterialRevocationStatus",
    category = "provenant",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.material.type"),
    printcolumn(name = "Digest", type_ = "string", json_path = ".spec.material.digest"),
    printcolumn(name = "Affected", type_ = "integer", json_path = ".status.affectedCount"),
    printcolumn(name = "Attested", type_ = "string", json_path = ".status.conditions[?(@.type==\"Attested\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".spec.reason", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.spec == oldSelf.spec")
        .message("spec is immutable: a revocation is signed into attestations as it was created; delete it (which reinstates the models) and create a new one")
        .field_path(".spec")
        .reason(Reason::FieldValueForbidden),
)]
#[serde(rename_all = "camelCase")]
pub struct MaterialRevocationSpec {
    /// What is revoked: its type and digest.
    pub material: RevokedMaterial,

    /// Why, in words (signed into every revocation attestation and shown by `provenant verify`):
    /// 1 to 1024 characters, not only whitespace.
    #[schemars(length(min = 1, max = 1024), pattern(r"\S"))]
    pub reason: String,

    /// The advisory that explains it, an `https://` URL of at most 2048 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 9, max = 2048), pattern(r"^https://[^\s/?#]+[^\s]*$"))]
    pub advisory: Option<String>,
}

/// The kind of a revoked material.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum MaterialType {
    /// A dataset, by the content digest runs declared or reported for it.
    Dataset,
    /// A container image, by manifest digest (pinned in a run's spec or observed on its pods).
    Image,
    /// A model, by manifest digest: the model itself and every model trained from it as a base
    /// model.
    Model,
}

/// The revoked material.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevokedMaterial {
    /// `Dataset`, `Image` or `Model` (a base model is a `Model`).
    #[serde(rename = "type")]
    pub type_: MaterialType,
    /// `sha256:<64 lowercase hex>`.
    #[schemars(length(max = 71), pattern(r"^sha256:[a-f0-9]{64}$"))]
    pub digest: String,
}

/// What the controller found and did. Written only by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaterialRevocationStatus {
    /// `Found` (the lineage was searched) and `Attested` (every listed model carries its
    /// revocation attestation; False with the registry's error while it does not).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// How many models depend on the material (all of them, also beyond the list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affected_count: Option<i64>,

    /// The affected models, nearest first (at most 1,000; `truncated` says when more exist).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub affected_models: Vec<AffectedModel>,

    /// More models are affected than listed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,

    /// When the affected models were last searched for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found_at: Option<Time>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A model that depends on the revoked material.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AffectedModel {
    /// `repository@sha256:<hex>`.
    pub model: String,
    /// The run that produced it (absent for a revoked model itself when no run of it is known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<AffectedRun>,
    /// From the material to the model, in words.
    pub path: String,
    /// The same path, one step per run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<PathStep>,
    /// Its signed revocation attestation is attached in the registry.
    #[serde(default)]
    pub attached: bool,
}

/// A TrainingRun, by namespace, name and UID.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AffectedRun {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub uid: String,
}

/// One run on the way from the material to an affected model.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PathStep {
    /// `namespace/name` of the run (its UID when the name is unknown).
    pub run: String,
    /// The input through which it depends on what came before: `dataset`, `image` or
    /// `baseModel`.
    pub via: String,
    /// Who vouched for that input: `declared`, `observed`, `reported`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
    /// The model the run produced, `repository@sha256:<hex>`.
    pub model: String,
}
