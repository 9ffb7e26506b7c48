//! The Sigstore bundle referrer, as bytes: the OCI 1.1 manifest cosign v3 pushes for `cosign
//! attest --new-bundle-format` (cosign v3.1.3 `pkg/oci/remote/write.go`,
//! `WriteAttestationNewBundleFormat` → `WriteReferrer`; cosign's `specs/BUNDLE_SPEC.md`), and its
//! fallback-index entry (docs/registry-layout.md, "Sigstore bundles").
//!
//! As cosign writes it: `artifactType` and the one layer's media type are the bundle's media
//! type, the config is the OCI empty descriptor (`{}`) carrying that `artifactType` too (`cosign
//! clean` recognises bundle referrers by `config.artifactType`), the manifest annotations
//! `dev.sigstore.bundle.content: dsse-envelope` and `dev.sigstore.bundle.predicateType`.
//! Unlike cosign: no `org.opencontainers.image.created` (a timestamp would give every attach a
//! new manifest, so attaching again after a crash would list a second referrer; provenant
//! writes no timestamps anywhere), and the layer's `org.opencontainers.image.title`, which
//! BUNDLE_SPEC suggests (`sha256-<hex>.sigstore.json`) and cosign v3.1.3 leaves out.
//!
//! Written with the lossless, order-stable [`Manifest`] of `oci.rs` rather than an `oci_spec`
//! manifest: two annotations in an `oci_spec` `HashMap` would serialize in a new order per
//! process, and so give the same bundle a new referrer digest.

use std::collections::BTreeMap;

use serde_json::Map;

use super::model::TITLE_ANNOTATION;
use super::oci::{Descriptor, EMPTY_BLOB, Manifest, OCI_EMPTY_MEDIA_TYPE, OCI_MANIFEST_MEDIA_TYPE};
use crate::observe::sha256_digest;
use crate::signing::BUNDLE_V03_MEDIA_TYPE;

/// What the bundle holds (cosign: `dsse-envelope` or `message-signature`).
pub const BUNDLE_CONTENT_ANNOTATION: &str = "dev.sigstore.bundle.content";
/// The value for a bundle holding a DSSE envelope.
pub const DSSE_ENVELOPE_CONTENT: &str = "dsse-envelope";
/// The predicate type of the in-toto statement in the bundle (cosign's `BundlePredicateType`).
pub const BUNDLE_PREDICATE_TYPE_ANNOTATION: &str = "dev.sigstore.bundle.predicateType";

/// BUNDLE_SPEC's file name for a bundle: `sha256-<hex>.sigstore.json` after its digest.
pub fn default_title(bundle: &[u8]) -> String {
    format!(
        "{}.sigstore.json",
        sha256_digest(bundle).replacen(':', "-", 1)
    )
}

/// A layer title is a file name clients save the layer as (`oras pull`): one plain path
/// component, so that it cannot name a file outside the directory it is pulled into.
pub fn check_title(title: &str) -> Result<(), String> {
    if title.is_empty() || title == "." || title == ".." {
        return Err(format!("layer title {title:?} is not a file name"));
    }
    if let Some(c) = title
        .chars()
        .find(|c| matches!(c, '/' | '\\') || c.is_control())
    {
        return Err(format!(
            "layer title {title:?} must be a plain file name (it has {c:?})"
        ));
    }
    Ok(())
}

/// The referrer carrying `bundle` (one layer titled `title`) about the subject manifest
/// (`media_type`, `digest`, `size`, as the store resolved it).
pub fn referrer(
    subject: (&str, &str, u64),
    bundle: &[u8],
    predicate_type: &str,
    title: &str,
) -> Manifest {
    let (media_type, digest, size) = subject;
    let mut config = Descriptor::of(OCI_EMPTY_MEDIA_TYPE, EMPTY_BLOB);
    config.artifact_type = Some(BUNDLE_V03_MEDIA_TYPE.to_string());
    Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST_MEDIA_TYPE.to_string()),
        artifact_type: Some(BUNDLE_V03_MEDIA_TYPE.to_string()),
        config,
        layers: vec![
            Descriptor::of(BUNDLE_V03_MEDIA_TYPE, bundle).with_annotation(TITLE_ANNOTATION, title),
        ],
        subject: Some(Descriptor::new(media_type, digest.to_string(), size)),
        annotations: BTreeMap::from([
            (
                BUNDLE_CONTENT_ANNOTATION.to_string(),
                DSSE_ENVELOPE_CONTENT.to_string(),
            ),
            (
                BUNDLE_PREDICATE_TYPE_ANNOTATION.to_string(),
                predicate_type.to_string(),
            ),
        ]),
        extra: Map::new(),
    }
}

/// The fallback-index entry for a bundle referrer: its descriptor with `artifactType` and the
/// manifest's annotations, as the referrers API would list it (and as BUNDLE_SPEC asks).
pub fn referrer_entry(manifest: &Manifest, bytes: &[u8]) -> Descriptor {
    let mut entry = Descriptor::of(OCI_MANIFEST_MEDIA_TYPE, bytes);
    entry.artifact_type = manifest.artifact_type.clone();
    entry.annotations = manifest.annotations.clone();
    entry
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::oci::Index;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const SLSA: &str = "https://slsa.dev/provenance/v1";
    const BUNDLE: &[u8] = br#"{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}"#;

    /// The bytes provenant writes: a digest already in a registry must not change.
    #[test]
    fn the_referrer_and_its_index_entry_keep_their_bytes() {
        let subject = (OCI_MANIFEST_MEDIA_TYPE, &*format!("sha256:{HEX}"), 492);
        let title = default_title(BUNDLE);
        assert_eq!(
            title,
            "sha256-f2168ec310ea3d35dc929b480c85a91c21775cbbf36db3a37e041e5fe815f586.sigstore.json"
        );
        let manifest = referrer(subject, BUNDLE, SLSA, &title);
        let bytes = serde_json::to_vec(&manifest).unwrap();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.dev.sigstore.bundle.v0.3+json","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2,"artifactType":"application/vnd.dev.sigstore.bundle.v0.3+json"},"layers":[{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","digest":"sha256:f2168ec310ea3d35dc929b480c85a91c21775cbbf36db3a37e041e5fe815f586","size":61,"annotations":{"org.opencontainers.image.title":"sha256-f2168ec310ea3d35dc929b480c85a91c21775cbbf36db3a37e041e5fe815f586.sigstore.json"}}],"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef","size":492},"annotations":{"dev.sigstore.bundle.content":"dsse-envelope","dev.sigstore.bundle.predicateType":"https://slsa.dev/provenance/v1"}}"#
        );
        // What oci_spec (and so the read side) makes of it.
        let spec: oci_spec::image::ImageManifest = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            spec.artifact_type().as_ref().map(|t| t.to_string()),
            Some(BUNDLE_V03_MEDIA_TYPE.to_string())
        );
        let mut index = Index::empty();
        assert!(index.add(referrer_entry(&manifest, &bytes)));
        let entry = serde_json::to_value(&index.manifests[0]).unwrap();
        assert_eq!(entry["artifactType"], BUNDLE_V03_MEDIA_TYPE);
        assert_eq!(entry["annotations"][BUNDLE_PREDICATE_TYPE_ANNOTATION], SLSA);
        assert_eq!(entry["digest"], sha256_digest(&bytes));
        // Another title, another referrer.
        let other = serde_json::to_vec(&referrer(subject, BUNDLE, SLSA, "model.sig")).unwrap();
        assert_ne!(sha256_digest(&other), sha256_digest(&bytes));
    }

    #[test]
    fn titles_are_plain_file_names() {
        for good in ["model.sig", "sha256-ab.sigstore.json", "a b", "..x"] {
            check_title(good).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "../x", "a\\b", "a\nb", "/etc/passwd"] {
            let err = check_title(bad).unwrap_err();
            assert!(err.starts_with("layer title"), "{err}");
        }
    }
}
