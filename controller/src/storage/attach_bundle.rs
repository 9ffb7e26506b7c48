//! Attaching a Sigstore bundle, over a [`Transport`] like the DSSE attach (`attach.rs`): the
//! bundle referrer cosign v3 writes (`sigstore_bundle.rs`), pushed by digest and, without a
//! referrers API, listed in the fallback index `sha256-<hex>` by the same read, add, write and
//! read-back as every tag update (docs/registry-layout.md, "Sigstore bundles").

use futures::FutureExt as _;

use super::attach::{Model, attach_referrer};
use super::error::StorageError;
use super::op;
use super::referrer::{NewBlob, Referrer};
use super::sigstore_bundle;
use super::store::{Attached, BundleAttestation};
use super::transport::Transport;

/// Attaches `attestation`'s bundle to its subject: uploads the bundle, pushes the referrer and,
/// without a referrers API, adds it to the fallback index. Nothing is written for a subject
/// that does not resolve.
pub(crate) async fn attach_bundle(
    t: &dyn Transport,
    attestation: &BundleAttestation,
) -> Result<Attached, StorageError> {
    let hex = validate(attestation)?;
    let model: Model<'_> = t.resolve(&attestation.subject.digest).shared();
    let resolved = model.clone().await?;
    let title = match &attestation.title {
        Some(title) => title.clone(),
        None => sigstore_bundle::default_title(&attestation.bundle),
    };
    let manifest = sigstore_bundle::referrer(
        (&resolved.media_type, &resolved.digest, resolved.size),
        &attestation.bundle,
        &attestation.predicate_type,
        &title,
    );
    let bytes = serde_json::to_vec(&manifest).map_err(|e| {
        StorageError::permanent(
            op::INPUT,
            t.digest_ref(&attestation.subject.digest),
            e.to_string(),
        )
    })?;
    let blob = NewBlob::new(&attestation.bundle);
    let entry = sigstore_bundle::referrer_entry(&manifest, &bytes);
    let referrer = Referrer::new(bytes, resolved.digest, &blob, entry);
    attach_referrer(t, hex, &referrer, &model).await?;
    tracing::debug!(subject = %attestation.subject, referrer = %referrer.digest, "Sigstore bundle attached");
    Ok(Attached {
        references: vec![t.digest_ref(&referrer.digest)],
        referrer_digest: referrer.digest,
    })
}

/// The hex of the subject's digest, after checking what a bundle attach needs.
fn validate(attestation: &BundleAttestation) -> Result<&str, StorageError> {
    let subject = &attestation.subject;
    let hex = subject.hex()?;
    let invalid = |why: String| StorageError::permanent(op::INPUT, subject.to_string(), why);
    if attestation.bundle.is_empty() || attestation.predicate_type.is_empty() {
        return Err(invalid("empty Sigstore bundle or predicate type".into()));
    }
    if let Some(title) = &attestation.title {
        sigstore_bundle::check_title(title).map_err(invalid)?;
    }
    Ok(hex)
}
