//! The model signature referrer (`model.sig`, docs/registry-layout.md "The model signature"): the
//! OpenSSF model-signing Sigstore bundle of a model, attached as an OCI 1.1 referrer through the
//! same protocol as the other referrers (`attach::attach_referrer`: pushed by digest, listed in
//! the fallback index `sha256-<hex>` without a referrers API), and read back for `verify`.
//!
//! The manifest is the one model-transparency writes for a signature in a registry
//! (`model_signing/_oci/registry.py` `OrasClient.push_signature` on its main branch): `artifactType`
//! `application/vnd.model-signing.signature.v0.1`, config `{}` as
//! `application/vnd.model-signing.signature.v0.1.config+json`, one layer, the model as `subject`;
//! plus the layer title `model.sig`, so `oras pull REPO@<referrer>` writes the file
//! `model_signing verify` reads. One deliberate difference: the layer's media type is
//! `application/json`, not the bundle's `application/vnd.dev.sigstore.bundle.v0.3+json`. cosign
//! v3 (3.1.3: `cmd/cosign/cli/verify/verify.go` auto-detection, `pkg/cosign/verify.go`
//! `GetBundles`, `pkg/oci/remote/signatures.go` `Bundle`) treats every referrer whose one layer
//! has a media type starting with `application/vnd.dev.sigstore.bundle` as an attestation of the
//! image: it then verifies only bundles, and refuses the model ("provided artifact digest does
//! not match any digest in statement"), since a model-signing statement names the model's files,
//! not its manifest. model-transparency's reader selects the referrer by `artifactType` and reads
//! its first layer whatever its media type (`_oci/attachment.py` `ReferrersAttachment.fetch`).

use std::collections::BTreeMap;

use futures::FutureExt as _;
use serde_json::Map;

use super::attach::{Model, attach_referrer};
use super::error::{ErrorKind, StorageError};
use super::model::TITLE_ANNOTATION;
use super::oci::{self, Descriptor, EMPTY_BLOB, Index, Manifest, OCI_MANIFEST_MEDIA_TYPE};
use super::op;
use super::referrer::{NewBlob, Referrer};
use super::store::{Attached, FoundModelSignature, Subject};
use super::transport::{Transport, check_digest, read_tag};

/// `artifactType` of a model signature referrer (model-transparency's).
pub const MODEL_SIGNATURE_ARTIFACT_TYPE: &str = "application/vnd.model-signing.signature.v0.1";
/// Media type of its config, the empty JSON object `{}` (model-transparency's).
pub const MODEL_SIGNATURE_CONFIG_MEDIA_TYPE: &str =
    "application/vnd.model-signing.signature.v0.1.config+json";
/// Media type of its one layer, the bundle (see the module documentation for why not the
/// bundle's own).
pub const MODEL_SIGNATURE_LAYER_MEDIA_TYPE: &str = "application/json";
/// The file name the layer is pulled as.
pub const MODEL_SIGNATURE_TITLE: &str = "model.sig";

/// The referrer carrying `bundle` about the subject manifest (`media_type`, `digest`, `size`).
pub fn referrer(subject: (&str, &str, u64), bundle: &[u8]) -> Manifest {
    let (media_type, digest, size) = subject;
    Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST_MEDIA_TYPE.to_string()),
        artifact_type: Some(MODEL_SIGNATURE_ARTIFACT_TYPE.to_string()),
        config: Descriptor::of(MODEL_SIGNATURE_CONFIG_MEDIA_TYPE, EMPTY_BLOB),
        layers: vec![
            Descriptor::of(MODEL_SIGNATURE_LAYER_MEDIA_TYPE, bundle)
                .with_annotation(TITLE_ANNOTATION, MODEL_SIGNATURE_TITLE),
        ],
        subject: Some(Descriptor::new(media_type, digest.to_string(), size)),
        annotations: BTreeMap::new(),
        extra: Map::new(),
    }
}

/// Attaches `bundle` to `subject`. Idempotent: the same bundle gives the same referrer, listed
/// once. Nothing is written for a subject that does not resolve.
pub(crate) async fn attach(
    t: &dyn Transport,
    subject: &Subject,
    bundle: &[u8],
) -> Result<Attached, StorageError> {
    let hex = subject.hex()?;
    if bundle.is_empty() {
        let why = "empty model signature bundle";
        return Err(StorageError::permanent(op::INPUT, subject.to_string(), why));
    }
    let model: Model<'_> = t.resolve(&subject.digest).shared();
    let resolved = model.clone().await?;
    let manifest = referrer(
        (&resolved.media_type, &resolved.digest, resolved.size),
        bundle,
    );
    let bytes = serde_json::to_vec(&manifest).map_err(|e| {
        StorageError::permanent(op::INPUT, t.digest_ref(&subject.digest), e.to_string())
    })?;
    let mut entry = Descriptor::of(OCI_MANIFEST_MEDIA_TYPE, &bytes);
    entry.artifact_type = manifest.artifact_type.clone();
    let blob = NewBlob::new(bundle);
    let referrer = Referrer::new(bytes, resolved.digest, &blob, entry);
    attach_referrer(t, hex, &referrer, &model).await?;
    tracing::debug!(%subject, referrer = %referrer.digest, "model signature attached");
    Ok(Attached {
        references: vec![t.digest_ref(&referrer.digest)],
        referrer_digest: referrer.digest,
    })
}

/// Every model signature of `subject`: the referrers with its `artifactType` (referrers API,
/// else the fallback index), each manifest and bundle checked against their digests. A listed
/// referrer that is gone or about another subject is skipped, as for the other referrers.
pub(crate) async fn found(
    t: &dyn Transport,
    subject: &Subject,
) -> Result<Vec<FoundModelSignature>, StorageError> {
    let hex = subject.hex()?;
    let is_ours = |a: Option<&str>| a == Some(MODEL_SIGNATURE_ARTIFACT_TYPE);
    let digests: Vec<String> = match t.referrers(&subject.digest).await? {
        Some(index) => index
            .manifests()
            .iter()
            .filter(|e| is_ours(e.artifact_type().as_ref().map(|a| a.to_string()).as_deref()))
            .map(|e| e.digest().to_string())
            .collect(),
        None => read_tag::<Index>(t, &oci::referrers_tag(hex))
            .await?
            .map(|index| index.doc.manifests)
            .unwrap_or_default()
            .into_iter()
            .filter(|e| is_ours(e.artifact_type.as_deref()))
            .map(|e| e.digest)
            .collect(),
    };
    let mut out = Vec::new();
    for digest in digests {
        let target = t.digest_ref(&digest);
        let Some(fetched) = t.get_manifest(&digest).await? else {
            tracing::warn!(referrer = %target, "listed model signature does not exist");
            continue;
        };
        check_digest(op::MANIFEST_GET, &target, &digest, &fetched.bytes)?;
        let manifest: Manifest = serde_json::from_slice(&fetched.bytes).map_err(|e| {
            StorageError::permanent(op::MANIFEST_GET, &target, format!("not a manifest: {e}"))
        })?;
        if manifest.subject.as_ref().map(|s| s.digest.as_str()) != Some(&subject.digest) {
            tracing::warn!(referrer = %target, "listed model signature is about another subject");
            continue;
        }
        for layer in &manifest.layers {
            let layer_ref = t.digest_ref(&layer.digest);
            let bundle = t.get_blob(&layer.digest).await?.ok_or_else(|| {
                StorageError::new(
                    op::BLOB_GET,
                    &layer_ref,
                    ErrorKind::NotFound,
                    "blob unknown",
                )
            })?;
            check_digest(op::BLOB_GET, &layer_ref, &layer.digest, &bundle)?;
            out.push(FoundModelSignature {
                reference: target.clone(),
                bundle,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::sha256_digest;

    /// The bytes provenant writes: a referrer digest already in a registry must not change.
    #[test]
    fn the_referrer_keeps_its_bytes() {
        let hex = "0123456789abcdef".repeat(4);
        let bundle = br#"{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}"#;
        let subject = (OCI_MANIFEST_MEDIA_TYPE, &*format!("sha256:{hex}"), 492);
        let bytes = serde_json::to_vec(&referrer(subject, bundle)).unwrap();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            format!(
                r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.model-signing.signature.v0.1","config":{{"mediaType":"application/vnd.model-signing.signature.v0.1.config+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2}},"layers":[{{"mediaType":"application/json","digest":"{}","size":61,"annotations":{{"org.opencontainers.image.title":"model.sig"}}}}],"subject":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{hex}","size":492}}}}"#,
                sha256_digest(bundle)
            )
        );
        // Not a layer cosign v3 takes for a Sigstore bundle of the model.
        assert!(
            !MODEL_SIGNATURE_LAYER_MEDIA_TYPE.starts_with("application/vnd.dev.sigstore.bundle")
        );
    }
}
