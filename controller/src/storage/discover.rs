//! The read side over a [`Transport`], for `provenant verify`: resolving a tag or digest, and
//! every DSSE envelope about a subject — the `.att` layers, the in-toto referrers and the
//! envelopes inside Sigstore bundle referrers (referrers API, else the fallback index).

use oci_spec::image::{ImageManifest as SpecManifest, MediaType};

use super::error::{ErrorKind, StorageError};
use super::oci::{
    self, DSSE_MEDIA_TYPE, IN_TOTO_ARTIFACT_TYPE, IN_TOTO_PREDICATE_TYPE_ANNOTATION, Index,
    Manifest, PREDICATE_TYPE_ANNOTATION,
};
use super::op;
use super::sigstore_bundle::BUNDLE_PREDICATE_TYPE_ANNOTATION;
use super::store::{FoundAttestation, ResolvedArtifact, Subject, Via};
use super::transport::{Transport, check_digest, manifest_media_type, read_tag};
use crate::observe::sha256_digest;
use crate::signing::{BUNDLE_V03_MEDIA_TYPE, SigstoreBundle};

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
    let mut add = |envelope: Vec<u8>,
                   predicate_type: Option<String>,
                   via: Via,
                   reference: String,
                   unreadable_bundle: Option<String>| {
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
                unreadable_bundle,
            }),
        }
    };

    let att_tag = oci::attestation_tag(hex);
    if let Some(att) = read_tag::<Manifest>(t, &att_tag).await? {
        for (envelope, predicate_type) in envelopes(t, att_layers(&att.doc)).await? {
            add(
                envelope,
                predicate_type,
                Via::Att,
                t.tag_ref(&att_tag),
                None,
            );
        }
    }

    for (digest, via) in referrers(t, subject, hex).await? {
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
        let reference = t.digest_ref(&digest);
        if via == Via::Bundle {
            for (bytes, predicate_type) in envelopes(t, bundle_layers(&manifest)).await? {
                let (envelope, unreadable) = envelope_of_bundle(bytes);
                add(envelope, predicate_type, via, reference.clone(), unreadable);
            }
            continue;
        }
        for (envelope, predicate_type) in envelopes(t, referrer_layers(&manifest)).await? {
            add(envelope, predicate_type, via, reference.clone(), None);
        }
    }
    Ok(found)
}

/// The DSSE envelope inside a Sigstore bundle, as DSSE JSON; a bundle that cannot be read is
/// kept as its own bytes with the reason, so that the verifier refuses it in words rather than
/// not seeing it.
fn envelope_of_bundle(bytes: Vec<u8>) -> (Vec<u8>, Option<String>) {
    let read = SigstoreBundle::from_json(&bytes)
        .map_err(|e| e.to_string())
        .and_then(|b| b.envelope.to_json().map_err(|e| e.to_string()));
    match read {
        Ok(envelope) => (envelope, None),
        Err(why) => (bytes, Some(why)),
    }
}

/// The digests of the in-toto and Sigstore bundle referrers of `subject` (by `artifactType`),
/// each with how it is read: from the referrers API when the store has one, else from the
/// fallback index. Other referrers (SBOMs, signatures) are skipped.
async fn referrers(
    t: &dyn Transport,
    subject: &Subject,
    hex: &str,
) -> Result<Vec<(String, Via)>, StorageError> {
    let via = |artifact_type: Option<&str>| match artifact_type {
        Some(IN_TOTO_ARTIFACT_TYPE) => Some(Via::Referrer),
        Some(BUNDLE_V03_MEDIA_TYPE) => Some(Via::Bundle),
        _ => None,
    };
    if let Some(index) = t.referrers(&subject.digest).await? {
        return Ok(index
            .manifests()
            .iter()
            .filter_map(|e| {
                let artifact_type = e.artifact_type().as_ref().map(MediaType::to_string);
                via(artifact_type.as_deref()).map(|v| (e.digest().to_string(), v))
            })
            .collect());
    }
    let Some(index) = read_tag::<Index>(t, &oci::referrers_tag(hex)).await? else {
        return Ok(Vec::new());
    };
    Ok(index
        .doc
        .manifests
        .into_iter()
        .filter_map(|e| via(e.artifact_type.as_deref()).map(|v| (e.digest, v)))
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

/// The bundle layers of a Sigstore bundle referrer (cosign's `dev.sigstore.bundle.predicateType`
/// annotation on the manifest).
fn bundle_layers(manifest: &SpecManifest) -> Vec<EnvelopeLayer> {
    let bundle = MediaType::from(BUNDLE_V03_MEDIA_TYPE);
    let predicate_type = manifest
        .annotations()
        .as_ref()
        .and_then(|a| a.get(BUNDLE_PREDICATE_TYPE_ANNOTATION))
        .cloned();
    manifest
        .layers()
        .iter()
        .filter(|l| *l.media_type() == bundle)
        .map(|l| EnvelopeLayer {
            digest: l.digest().to_string(),
            predicate_type: predicate_type.clone(),
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
