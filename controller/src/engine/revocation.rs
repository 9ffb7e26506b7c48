//! Revocation attestations through the same engine as provenance: a
//! [`RevocationStatement`](crate::provenance::revocation::RevocationStatement) signed into a DSSE
//! envelope with the controller's key, attached to its model like the provenance (the cosign
//! `.att` tag and an OCI 1.1 referrer; no `.sig`: the model's own signature is unchanged).
//! Used by the controller (a MaterialRevocation) and by `provenant revoke`.

use super::EngineError;
use crate::provenance::revocation::{REVOCATION_PREDICATE_TYPE, RevocationStatement};
use crate::signing::{self, Signer};
use crate::storage::{Attestation, AttestationStore, Subject};

/// The signed revocation statement, ready for [`attach`]. Each call signs anew (ECDSA
/// signatures are randomized): a caller that may retry should remember what it attached.
pub fn sign(
    statement: &RevocationStatement,
    signer: &dyn Signer,
) -> Result<Attestation, EngineError> {
    let payload = statement.to_bytes().map_err(EngineError::Statement)?;
    let envelope =
        signing::sign_envelope(signer, signing::IN_TOTO_PAYLOAD_TYPE, &payload)?.to_json()?;
    let subject = statement.subject.first().and_then(|s| {
        Some(Subject::new(
            s.name.clone()?,
            format!("sha256:{}", s.digest.get("sha256")?),
        ))
    });
    let subject = subject.ok_or_else(|| {
        EngineError::Record("a revocation statement needs a subject with a sha256 digest".into())
    })?;
    Ok(Attestation {
        subject,
        predicate_type: REVOCATION_PREDICATE_TYPE.to_string(),
        envelope,
        signature: None,
    })
}

/// Attach a signed revocation statement to its model. Returns the references written.
pub async fn attach(
    attestation: &Attestation,
    store: &dyn AttestationStore,
) -> Result<Vec<String>, EngineError> {
    Ok(store.attach(attestation).await?.references)
}
