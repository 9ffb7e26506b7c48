//! Refusing a new TrainingRun that declares a revoked material, before any pod exists: a
//! dataset digest, the image pinned by digest, or a base model that is revoked (the revoked
//! model itself, or any model a revocation lists as affected: a model trained on a revoked
//! dataset is revoked too). Pure: the revocations come from the controller's cache.

use kube::ResourceExt;

use crate::api::{MaterialRevocation, MaterialType, TrainingRunSpec};
use crate::lineage::pinned_digest;

/// Condition reason of a run refused for a revoked material (and of the `Revoked` condition).
pub const REASON: &str = "MaterialRevoked";

/// Why `spec` may not run, naming the field, the revocation and its reason; None when it
/// declares nothing revoked. Revocations being deleted (a false alarm) no longer refuse.
pub fn check<'a>(
    spec: &TrainingRunSpec,
    revocations: impl IntoIterator<Item = &'a MaterialRevocation>,
) -> Option<String> {
    let base = spec.base_model.as_ref().and_then(|b| b.digest.as_deref());
    let image = pinned_digest(&spec.image);
    for revocation in revocations {
        if revocation.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let material = &revocation.spec.material;
        let digest = material.digest.as_str();
        let field = match material.type_ {
            MaterialType::Dataset => spec
                .datasets
                .iter()
                .position(|d| d.digest.as_deref() == Some(digest))
                .map(|i| format!("spec.datasets[{i}].digest")),
            MaterialType::Image => (image.as_deref() == Some(digest)).then(|| "spec.image".into()),
            MaterialType::Model => (base == Some(digest)).then(|| "spec.baseModel.digest".into()),
        };
        let (field, what) = match field {
            Some(field) => (field, digest.to_string()),
            None => {
                // A base model the revocation found affected (its descendants, or the models of
                // a revoked dataset or image).
                let Some(base) = base else { continue };
                let affected = revocation.status.as_ref().and_then(|s| {
                    s.affected_models
                        .iter()
                        .find(|m| m.model.rsplit_once('@').is_some_and(|(_, d)| d == base))
                });
                let Some(affected) = affected else { continue };
                (
                    "spec.baseModel.digest".to_string(),
                    format!("{base} (affected: {})", affected.path),
                )
            }
        };
        let advisory = revocation
            .spec
            .advisory
            .as_deref()
            .map(|a| format!(" ({a})"))
            .unwrap_or_default();
        return Some(format!(
            "{field} {what} is revoked by MaterialRevocation {}: {}{advisory}; a run may not use a revoked material",
            revocation.name_any(),
            revocation.spec.reason
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AffectedModel, MaterialRevocationSpec, MaterialRevocationStatus};
    use crate::api::{RevokedMaterial, TrainingRun};

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn revocation(type_: MaterialType, d: &str, affected: &[&str]) -> MaterialRevocation {
        let mut r = MaterialRevocation::new(
            "cve-1",
            MaterialRevocationSpec {
                material: RevokedMaterial {
                    type_,
                    digest: d.to_string(),
                },
                reason: "poisoned".into(),
                advisory: Some("https://example.com/a".into()),
            },
        );
        r.status = Some(MaterialRevocationStatus {
            affected_models: affected
                .iter()
                .map(|m| AffectedModel {
                    model: format!("reg.io/m@{m}"),
                    path: format!("dataset {d} → … → reg.io/m@{m}"),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        });
        r
    }

    fn spec(extra: serde_json::Value) -> TrainingRunSpec {
        let mut spec = serde_json::json!({
            "image": format!("reg.io/train@{}", digest('1')),
            "seed": 1,
            "output": {"repository": "reg.io/m"},
        });
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            spec[k] = v;
        }
        let run: TrainingRun = serde_json::from_value(serde_json::json!({
            "apiVersion": "provenant.dev/v1alpha1", "kind": "TrainingRun",
            "metadata": {"name": "r"}, "spec": spec,
        }))
        .expect("a run");
        run.spec
    }

    #[test]
    fn each_declared_material_is_refused_naming_its_field_and_the_revocation() {
        let dataset = revocation(MaterialType::Dataset, &digest('d'), &[&digest('a')]);
        let run = spec(serde_json::json!({"datasets": [
            {"name": "ok", "uri": "gs://x"},
            {"name": "bad", "uri": "gs://y", "digest": digest('d')},
        ]}));
        let message = check(&run, [&dataset]).expect("refused");
        assert!(
            message.starts_with(&format!(
                "spec.datasets[1].digest {} is revoked by MaterialRevocation cve-1: poisoned (https://example.com/a)",
                digest('d')
            )),
            "{message}"
        );

        let image = revocation(MaterialType::Image, &digest('1'), &[]);
        assert!(
            check(&spec(serde_json::json!({})), [&image])
                .unwrap()
                .starts_with("spec.image")
        );

        let model = revocation(MaterialType::Model, &digest('a'), &[]);
        let tune =
            spec(serde_json::json!({"baseModel": {"uri": "oci://m", "digest": digest('a')}}));
        assert!(
            check(&tune, [&model])
                .unwrap()
                .starts_with("spec.baseModel.digest")
        );
        // A model the dataset revocation found affected is refused as a base model too.
        let message = check(&tune, [&dataset]).expect("refused");
        assert!(message.contains("(affected: dataset"), "{message}");
    }

    #[test]
    fn other_materials_and_withdrawn_revocations_are_not_refused() {
        let mut dataset = revocation(MaterialType::Dataset, &digest('d'), &[]);
        let other = spec(serde_json::json!({
            "datasets": [{"name": "x", "uri": "gs://x", "digest": digest('e')}],
            "baseModel": {"uri": "oci://m", "digest": digest('b')},
        }));
        assert_eq!(check(&other, [&dataset]), None);
        let unpinned = spec(serde_json::json!({"image": "reg.io/train:1.0"}));
        let image = revocation(MaterialType::Image, &digest('1'), &[]);
        assert_eq!(check(&unpinned, [&image]), None);
        let declares = spec(serde_json::json!({
            "datasets": [{"name": "x", "uri": "gs://x", "digest": digest('d')}],
        }));
        dataset.metadata.deletion_timestamp = Some(crate::reconcile::status::now());
        assert_eq!(check(&declares, [&dataset]), None);
    }
}
