//! The files of a stored model, read back from its manifest (the read side of `model.rs`): what
//! the model signature (`provenance::model_signing`) is made from when a model is attested, and
//! recomputed from when it is verified. Only provenant's model format counts — an artifact
//! whose every layer is a file stored as it is, titled with its relative path — since only there
//! is a layer digest the sha256 of a file that a user gets back by pulling it.

use super::error::{ErrorKind, StorageError};
use super::model::{MODEL_ARTIFACT_TYPE, MODEL_FILE_MEDIA_TYPE, TITLE_ANNOTATION};
use super::oci::Manifest;
use super::op;
use super::transport::{Transport, check_digest};

/// One file of a stored model, as its manifest lists it (unchecked: the manifest is input).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelLayer {
    /// `org.opencontainers.image.title`: the file's relative path.
    pub title: String,
    /// The layer digest, the file's `sha256:<hex>`.
    pub digest: String,
    pub size: u64,
}

/// The files a manifest lists, when it is a provenant model: `artifactType`
/// `application/vnd.provenant.model.v1`, every layer an `application/octet-stream` blob with a
/// title. `None` for any other manifest (a container image, another tool's artifact whose layers
/// may be archives): such an artifact has no files to sign one by one.
pub fn model_layers(manifest: &[u8]) -> Option<Vec<ModelLayer>> {
    let manifest: Manifest = serde_json::from_slice(manifest).ok()?;
    if manifest.artifact_type.as_deref() != Some(MODEL_ARTIFACT_TYPE) {
        return None;
    }
    manifest
        .layers
        .into_iter()
        .map(|l| {
            let title = l.annotations.get(TITLE_ANNOTATION)?.clone();
            (l.media_type == MODEL_FILE_MEDIA_TYPE).then_some(ModelLayer {
                title,
                digest: l.digest,
                size: l.size,
            })
        })
        .collect()
}

/// The files of the model whose manifest is `digest` in `t` (fetched and checked against the
/// digest); `None` when the manifest is not a provenant model.
pub(crate) async fn stored_layers(
    t: &dyn Transport,
    digest: &str,
) -> Result<Option<Vec<ModelLayer>>, StorageError> {
    let target = t.digest_ref(digest);
    let fetched = t.get_manifest(digest).await?.ok_or_else(|| {
        StorageError::new(
            op::MANIFEST_GET,
            &target,
            ErrorKind::NotFound,
            "manifest not found",
        )
    })?;
    check_digest(op::MANIFEST_GET, &target, digest, &fetched.bytes)?;
    Ok(model_layers(&fetched.bytes))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn layer(title: Option<&str>, media_type: &str) -> serde_json::Value {
        let mut l = json!({"mediaType": media_type, "digest": format!("sha256:{}", "a".repeat(64)), "size": 3});
        if let Some(t) = title {
            l["annotations"] = json!({ TITLE_ANNOTATION: t });
        }
        l
    }

    fn manifest(artifact_type: Option<&str>, layers: Vec<serde_json::Value>) -> Vec<u8> {
        let mut m = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": format!("sha256:{}", "4".repeat(64)), "size": 2},
            "layers": layers,
        });
        if let Some(a) = artifact_type {
            m["artifactType"] = a.into();
        }
        serde_json::to_vec(&m).unwrap()
    }

    #[test]
    fn a_model_manifest_lists_its_files() {
        let m = manifest(
            Some(MODEL_ARTIFACT_TYPE),
            vec![
                layer(Some("a/b"), MODEL_FILE_MEDIA_TYPE),
                layer(Some("../x"), MODEL_FILE_MEDIA_TYPE),
            ],
        );
        let files = model_layers(&m).expect("a model");
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].title, "a/b");
        // Titles are input, kept as read: the signature module refuses what is not a path.
        assert_eq!(files[1].title, "../x");
        assert_eq!(files[0].size, 3);
        // A model without files is a model (with nothing to sign).
        assert_eq!(
            model_layers(&manifest(Some(MODEL_ARTIFACT_TYPE), vec![])),
            Some(vec![])
        );
    }

    #[test]
    fn other_artifacts_are_not_models() {
        let file = || layer(Some("a"), MODEL_FILE_MEDIA_TYPE);
        for m in [
            manifest(None, vec![file()]),
            manifest(Some("application/vnd.unknown.artifact.v1"), vec![file()]),
            manifest(
                Some(MODEL_ARTIFACT_TYPE),
                vec![file(), layer(None, MODEL_FILE_MEDIA_TYPE)],
            ),
            manifest(
                Some(MODEL_ARTIFACT_TYPE),
                vec![layer(
                    Some("dir"),
                    "application/vnd.oci.image.layer.v1.tar+gzip",
                )],
            ),
            b"not json".to_vec(),
            br#"{"manifests":[]}"#.to_vec(),
        ] {
            assert_eq!(model_layers(&m), None, "{}", String::from_utf8_lossy(&m));
        }
    }
}
