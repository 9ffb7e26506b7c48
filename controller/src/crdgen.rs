//! The CustomResourceDefinition YAML, generated from the API types (`provenant crds`).

use kube::CustomResourceExt;

use crate::api::{MaterialRevocation, TrainingRun};

/// Errors while rendering the CRDs.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    #[error("cannot serialize the {kind} CRD to YAML: {reason}")]
    Yaml { kind: &'static str, reason: String },
}

/// Every CRD provenant serves, as one multi-document YAML stream (what `crds/` holds):
/// TrainingRun, then MaterialRevocation.
pub fn crds_yaml() -> Result<String, CrdError> {
    let mut out = String::new();
    for (kind, crd) in [
        ("TrainingRun", TrainingRun::crd()),
        ("MaterialRevocation", MaterialRevocation::crd()),
    ] {
        let yaml = serde_saphyr::to_string(&crd).map_err(|e| CrdError::Yaml {
            kind,
            reason: e.to_string(),
        })?;
        out.push_str("---\n");
        out.push_str(&yaml);
    }
    Ok(out)
}
