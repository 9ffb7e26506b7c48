//! The CustomResourceDefinition YAML, generated from the API types (`provenant crds`).

use kube::CustomResourceExt;

use crate::api::TrainingRun;

/// Errors while rendering the CRDs.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    #[error("cannot serialize the TrainingRun CRD to YAML: {0}")]
    Yaml(String),
}

/// Every CRD provenant serves, as one multi-document YAML stream (what `crds/` holds).
pub fn crds_yaml() -> Result<String, CrdError> {
    let crd = TrainingRun::crd();
    let yaml = serde_saphyr::to_string(&crd).map_err(|e| CrdError::Yaml(e.to_string()))?;
    Ok(format!("---\n{yaml}"))
}
