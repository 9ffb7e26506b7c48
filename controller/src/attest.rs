//! Attest: the provenance engine shared by the controller and `provenant attest`.
//! statement → signed envelope (+ cosign simple signatures) → persisted record → stored in the
//! registry (or an OCI layout). Signing and storage sit behind the [`Signer`] and
//! [`AttestationStore`] traits; this module never talks to Kubernetes.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::observe::sha256_digest;
use crate::provenance::statement::Statement;
use crate::signing::{self, Signer, SigningError};
use crate::storage::{Attestation, AttestationStore, SimpleSignature, StorageError, Subject};

/// What gets persisted before any registry write: everything needed to attach the same bytes again
/// after a crash, without signing anew (ECDSA signatures are randomized: a second signature would
/// be a different envelope).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignedRecord {
    /// Predicate type of the statement.
    pub predicate_type: String,
    /// Id of the signing key.
    pub key_id: String,
    /// The DSSE envelope, exact bytes (JSON).
    #[serde(with = "text")]
    pub envelope: Vec<u8>,
    /// One cosign simple signature per subject.
    pub signatures: Vec<SubjectSignature>,
}

/// A cosign simple-signing signature over one subject's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubjectSignature {
    pub repository: String,
    pub digest: String,
    /// The simple-signing payload, base64.
    pub payload: String,
    /// Base64 DER ECDSA signature over the payload.
    pub signature: String,
}

/// Serialize the envelope bytes as a JSON string (they are UTF-8 JSON), so the record stays readable.
mod text {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&String::from_utf8_lossy(bytes))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        Ok(String::deserialize(d)?.into_bytes())
    }
}

impl SignedRecord {
    /// `sha256:` digest of the envelope bytes (what `status.provenance.envelopeDigest` shows).
    pub fn envelope_digest(&self) -> String {
        sha256_digest(&self.envelope)
    }

    /// The subjects of the statement, as registry subjects.
    pub fn subjects(&self) -> Vec<Subject> {
        self.signatures
            .iter()
            .map(|s| Subject {
                repository: s.repository.clone(),
                digest: s.digest.clone(),
            })
            .collect()
    }

    /// One attestation per subject, ready for a store.
    pub fn attestations(&self) -> Result<Vec<Attestation>, AttestError> {
        self.signatures
            .iter()
            .map(|s| {
                let payload = STANDARD.decode(&s.payload).map_err(|e| {
                    AttestError::Record(format!(
                        "signature payload of {} is not base64: {e}",
                        s.repository
                    ))
                })?;
                Ok(Attestation {
                    subject: Subject {
                        repository: s.repository.clone(),
                        digest: s.digest.clone(),
                    },
                    predicate_type: self.predicate_type.clone(),
                    envelope: self.envelope.clone(),
                    signature: Some(SimpleSignature {
                        payload,
                        signature: s.signature.clone(),
                    }),
                })
            })
            .collect()
    }
}

/// Why attesting failed.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    #[error("signing failed: {0}")]
    Signing(#[from] SigningError),
    #[error("storing failed: {0}")]
    Storage(#[from] StorageError),
    #[error("persisted provenance record is unusable: {0}")]
    Record(String),
}

/// Sign a statement: the DSSE envelope over it, and a cosign simple signature per subject.
pub fn sign(statement: &Statement, signer: &dyn Signer) -> Result<SignedRecord, AttestError> {
    let payload = statement.to_bytes();
    let envelope =
        signing::dsse::sign_envelope(signer, signing::dsse::IN_TOTO_PAYLOAD_TYPE, &payload)?;
    let mut signatures = Vec::new();
    for subject in &statement.subject {
        let (Some(repository), Some(hex)) = (subject.name.as_ref(), subject.digest.get("sha256"))
        else {
            continue;
        };
        let digest = format!("sha256:{hex}");
        let (payload, signature) =
            signing::simple_signing::sign_simple(signer, repository, &digest)?;
        signatures.push(SubjectSignature {
            repository: repository.clone(),
            digest,
            payload: STANDARD.encode(payload),
            signature,
        });
    }
    Ok(SignedRecord {
        predicate_type: statement.predicate_type.clone(),
        key_id: signer.key_id().to_string(),
        envelope: envelope.to_json(),
        signatures,
    })
}

/// Attach a signed record to every subject. Returns every reference written.
pub async fn attach(
    record: &SignedRecord,
    store: &dyn AttestationStore,
) -> Result<Vec<String>, AttestError> {
    let mut references = Vec::new();
    for attestation in record.attestations()? {
        references.extend(store.attach(&attestation).await?.references);
    }
    Ok(references)
}

/// Key → value form of a record for a ConfigMap (`envelope.json`, `record.json`).
pub fn to_config_map_data(record: &SignedRecord) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "envelope.json".to_string(),
            String::from_utf8_lossy(&record.envelope).into_owned(),
        ),
        (
            "record.json".to_string(),
            serde_json::to_string_pretty(record).unwrap_or_default(),
        ),
    ])
}

/// Read a record back from ConfigMap data.
pub fn from_config_map_data(data: &BTreeMap<String, String>) -> Result<SignedRecord, AttestError> {
    let text = data
        .get("record.json")
        .ok_or_else(|| AttestError::Record("record.json is missing".into()))?;
    serde_json::from_str(text).map_err(|e| AttestError::Record(format!("record.json: {e}")))
}
