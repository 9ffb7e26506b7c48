//! The read side over a [`Transport`], for `provenant verify`: resolving a tag or digest, and
//! every DSSE envelope about a subject — the `.att` layers and the in-toto referrers (referrers
//! API, else the fallback index).

use oci_spec::image::{ImageManifest as SpecManifest, MediaType};

use super::error::{ErrorKind, StorageError};
use super::oci::{
    self, DSSE_MEDIA_TYPE, IN_TOTO_ARTIFACT_TYPE, IN_TOTO_PREDICATE_TYPE_ANNOTATION, Index,
    Manifest, PREDICATE_TYPE_ANNOTATION,
};
use super::op;
use super::store::{FoundAttestation, ResolvedArtifact, Subject, Via};
use super::transport::{Transport, check_digest, manifest_media_type, read_tag};
use crate::observe::sha256_digest;

/// The manifest behind a tag or a digest (`sha256:..`), its content checked against the digest.
pub(crate) async fn resolve_reference(
    t: &dyn Transport,
    reference: &str,
) -> Result<ResolvedArtifact, StorageError> {
    if oci::sha256_hex(reference).is_some() {
        return t.resolve(reference).await;
    }
    let target = t.tag_ref(reference);
    let fetched = t.get_manifest(reference).await?.ok_or_else(|| {
        StorageError::new(
            op::MANIFEST_GET,
            &target,
            ErrorKind::NotFound,
            "tag not found",
        )
    })?;
    Ok(ResolvedArtifact {
        digest: sha256_digest(&fetched.bytes),
        media_type: manifest_media_type(fetched.media_type, &fetched.bytes, &target)?,
        size: fetched.bytes.len() as u64,
    })
}

/// Every DSSE envelope about `subject`: the `.att` layers, then the in-toto referrers (referrers
/// API, else the fallback index); one entry per envelope digest, with every place it was found.
pub(crate) async fn attestations(
    t: &dyn Transport,
    subject: &Subject,
) -> Result<Vec<FoundAttestation>, StorageError> {
    let hex = subject.hex()?;
    let mut found: Vec<FoundAttestation> = Vec::new();
    let mut add =
        |envelope: Vec<u8>, predicate_type: Option<String>, via: Via, reference: String| {
            let digest = sha256_digest(&envelope);
            match found.iter_mut().find(|f| f.digest == digest) {
                Some(f) => {
                    if !f.via.contains(&via) {
                        f.via.push(via);
                    }
                    f.predicate_type = f.predicate_type.take().or(predicate_type);
                }
                None => found.push(FoundAttestation {
                    envelope,
                    digest,
                    predicate_type,
                    via: vec![via],
                    reference,
                }),
            }
        };

    let att_tag = oci::attestation_tag(hex);
    if let Some(att) = read_tag::<Manifest>(t, &att_tag).await? {
        for (envelope, predicate_type) in envelopes(t, att_layers(&att.doc)).await? {
            add(envelope, predicate_type, Via::Att, t.tag_ref(&att_tag));
        }
    }

    for digest in in_toto_referrers(t, subject, hex).await? {
        let Some(manifest) = manifest_by_digest(t, &digest).await? else {
            tracing::warn!(referrer = %t.digest_ref(&digest), "listed referrer does not exist");
            continue;
        };
        // An entry about another subject (a hand-edited index) is not evidence about this one.
        if manifest
            .subject()
            .as_ref()
            .is_some_and(|s| s.digest().as_ref() != subject.digest)
        {
            tracing::warn!(referrer = %t.digest_ref(&digest), "listed referrer is about another subject");
            continue;
        }
        for (envelope, predicate_type) in envelopes(t, referrer_layers(&manifest)).await? {
            add(
                envelope,
                predicate_type,
                Via::Referrer,
                t.digest_ref(&digest),
            );
        }
    }
    Ok(found)
}

/// The digests of the in-toto referrers of `subject`: from the referrers API when the store has
/// one, else from the fallback index.
async fn in_toto_referrers(
    t: &dyn Transport,
    subject: &Subject,
    hex: &str,
) -> Result<Vec<String>, StorageError> {
    if let Some(index) = t.referrers(&subject.digest).await? {
        let in_toto = MediaType::from(IN_TOTO_ARTIFACT_TYPE);
        return Ok(index
            .manifests()
            .iter()
            .filter(|e| e.artifact_type().as_ref() == Some(&in_toto))
            .map(|e| e.digest().to_string())
            .collect());
    }
    let Some(index) = read_tag::<Index>(t, &oci::referrers_tag(hex)).await? else {
        return Ok(Vec::new());
    };
    Ok(index
        .doc
        .manifests
        .into_iter()
        .filter(|e| e.artifact_type.as_deref() == Some(IN_TOTO_ARTIFACT_TYPE))
        .map(|e| e.digest)
        .collect())
}

/// A manifest by digest, its content checked; `None` when absent.
async fn manifest_by_digest(
    t: &dyn Transport,
    digest: &str,
) -> Result<Option<SpecManifest>, StorageError> {
    let target = t.digest_ref(digest);
    let Some(fetched) = t.get_manifest(digest).await? else {
        return Ok(None);
    };
    check_digest(op::MANIFEST_GET, &target, digest, &fetched.bytes)?;
    serde_json::from_slice(&fetched.bytes)
        .map(Some)
        .map_err(|e| {
            StorageError::permanent(
                op::MANIFEST_GET,
                target,
                format!("not an image manifest: {e}"),
            )
        })
}

/// A DSSE layer to read, with the predicate type its annotations give.
struct EnvelopeLayer {
    digest: String,
    predicate_type: Option<String>,
}

/// The DSSE layers of a `.att` manifest (cosign's `predicateType` annotation).
fn att_layers(manifest: &Manifest) -> Vec<EnvelopeLayer> {
    manifest
        .layers
        .iter()
        .filter(|l| l.media_type == DSSE_MEDIA_TYPE)
        .map(|l| EnvelopeLayer {
            digest: l.digest.clone(),
            predicate_type: l
                .annotations
                .get(PREDICATE_TYPE_ANNOTATION)
                .or_else(|| manifest.annotations.get(IN_TOTO_PREDICATE_TYPE_ANNOTATION))
                .cloned(),
        })
        .collect()
}

/// The DSSE layers of a referrer manifest (`in-toto.io/predicate-type` on the layer or the
/// manifest).
fn referrer_layers(manifest: &SpecManifest) -> Vec<EnvelopeLayer> {
    let dsse = MediaType::from(DSSE_MEDIA_TYPE);
    let predicate = |annotations: &Option<std::collections::HashMap<String, String>>| {
        annotations
            .as_ref()
            .and_then(|a| a.get(IN_TOTO_PREDICATE_TYPE_ANNOTATION))
            .cloned()
    };
    manifest
        .layers()
        .iter()
        .filter(|l| *l.media_type() == dsse)
        .map(|l| EnvelopeLayer {
            digest: l.digest().to_string(),
            predicate_type: predicate(l.annotations())
                .or_else(|| predicate(manifest.annotations())),
        })
        .collect()
}

/// The envelopes of `layers`, each checked against its digest, with their predicate types.
async fn envelopes(
    t: &dyn Transport,
    layers: Vec<EnvelopeLayer>,
) -> Result<Vec<(Vec<u8>, Option<String>)>, StorageError> {
    let mut out = Vec::with_capacity(layers.len());
    for layer in layers {
        let target = t.digest_ref(&layer.digest);
        let bytes = t.get_blob(&layer.digest).await?.ok_or_else(|| {
            StorageError::new(op::BLOB_GET, &target, ErrorKind::NotFound, "blob unknown")
        })?;
        check_digest(op::BLOB_GET, &target, &layer.digest, &bytes)?;
        out.push((bytes, layer.predicate_type));
    }
    Ok(out)
}
