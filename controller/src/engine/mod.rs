//! The provenance engine, shared by the controller and `provenant attest` (the attest step of
//! DESIGN.md's flow): statement → signed envelope (+ cosign simple signatures) → persisted record
//! → stored in the registry (or an OCI layout). Signing and storage sit behind the [`Signer`] and
//! [`AttestationStore`] traits; this module never talks to Kubernetes.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::observe::sha256_digest;
use crate::provenance::statement::Statement;
use crate::signing::{self, Envelope, Signer, SigningError, SigstoreBundle};
use crate::storage::{
    Attestation, AttestationStore, BundleAttestation, Encoding, SimpleSignature, StorageError,
    Subject,
};

mod check;
pub mod model_signature;
pub mod revocation;
pub use check::{Untrusted, check_record};
pub use model_signature::{Model, ModelSignature, sign_models};

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
    /// The DSSE envelope, exact bytes (JSON). In `record.json` it is embedded as JSON, verbatim;
    /// records written before that hold it as a JSON string, read to the same bytes.
    #[serde(with = "embedded_json")]
    pub envelope: Vec<u8>,
    /// One cosign simple signature per subject.
    pub signatures: Vec<SubjectSignature>,
    /// The OpenSSF model signature of each subject that is a provenant model
    /// ([`model_signature`]); none in records written before them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub model_signatures: Vec<ModelSignature>,
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

/// The envelope inside the record: its bytes embedded verbatim as a JSON value
/// (`"envelope":{"payloadType":...}`), readable as it is in `record.json`. Reading accepts that
/// and the form records were first written in, the envelope as a JSON string
/// (`"envelope":"{\"payloadType\":...}"`); both give back the exact bytes, so `envelope_digest`
/// does not change across a save and load, nor across an upgrade with records already persisted.
/// Read from JSON text, not from a `serde_json::Value` (which would reorder the envelope's keys).
mod embedded_json {
    use serde::de::Error as _;
    use serde::ser::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::value::RawValue;

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        let text = std::str::from_utf8(bytes)
            .map_err(|e| S::Error::custom(format!("the envelope is not UTF-8: {e}")))?;
        // Embedded only when it is exactly one JSON object: text starting with `"` would read back
        // as the first form, and RawValue drops surrounding whitespace, which would change the
        // bytes. Anything else (never an envelope `sign` made) is kept as a string, the first form.
        let embedded = text
            .starts_with('{')
            .then(|| RawValue::from_string(text.to_owned()).ok())
            .flatten()
            .filter(|raw| raw.get().len() == text.len());
        match embedded {
            Some(raw) => raw.serialize(s),
            None => s.serialize_str(text),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        if raw.get().starts_with('"') {
            // The first form: the envelope as a JSON string.
            let text: String = serde_json::from_str(raw.get()).map_err(D::Error::custom)?;
            Ok(text.into_bytes())
        } else {
            Ok(Box::<str>::from(raw).into_string().into_bytes())
        }
    }
}

impl SignedRecord {
    /// `sha256:` digest of the envelope bytes (what `status.provenance.envelopeDigest` shows).
    pub fn envelope_digest(&self) -> String {
        sha256_digest(&self.envelope)
    }

    /// The record as compact JSON.
    pub fn to_json(&self) -> Result<Vec<u8>, EngineError> {
        serde_json::to_vec(self).map_err(EngineError::RecordJson)
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
    pub fn attestations(&self) -> Result<Vec<Attestation>, EngineError> {
        self.signatures
            .iter()
            .map(|s| {
                let payload = STANDARD.decode(&s.payload).map_err(|e| {
                    EngineError::Record(format!(
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

    /// One Sigstore bundle attestation per subject: the record's envelope in a bundle v0.3
    /// with the signing key's hint (`signing::bundle`), layer title after the bundle's digest.
    pub fn bundle_attestations(&self) -> Result<Vec<BundleAttestation>, EngineError> {
        let unusable =
            |e: String| EngineError::Record(format!("cannot make its Sigstore bundle: {e}"));
        let envelope = Envelope::from_json(&self.envelope).map_err(|e| unusable(e.to_string()))?;
        let bundle = SigstoreBundle::new(&envelope, &self.key_id)
            .and_then(|b| b.to_json())
            .map_err(|e| unusable(e.to_string()))?;
        Ok(self
            .subjects()
            .into_iter()
            .map(|subject| BundleAttestation {
                subject,
                predicate_type: self.predicate_type.clone(),
                bundle: bundle.clone(),
                title: None,
            })
            .collect())
    }
}

/// Why the engine could not sign or attach.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("signing failed: {0}")]
    Signing(#[from] SigningError),
    #[error("storing failed: {0}")]
    Storage(#[from] StorageError),
    #[error("persisted provenance record is unusable: {0}")]
    Record(String),
    #[error("cannot serialize the statement: {0}")]
    Statement(#[source] serde_json::Error),
    #[error("cannot serialize the provenance record: {0}")]
    RecordJson(#[source] serde_json::Error),
    #[error("cannot sign the files of model {model}: {source}")]
    ModelSignature {
        model: String,
        #[source]
        source: crate::provenance::model_signing::ModelSigningError,
    },
    #[error("cannot build the Sigstore bundle of a model signature: {0}")]
    Bundle(#[source] crate::signing::BundleError),
}

impl EngineError {
    /// Condition reason (CamelCase, stable).
    pub fn reason(&self) -> &'static str {
        match self {
            EngineError::Signing(_) => "SigningFailed",
            EngineError::Statement(_) => "StatementUnserializable",
            EngineError::ModelSignature { .. } => "ModelUnsignable",
            EngineError::Bundle(_) => "SigningFailed",
            EngineError::Storage(_) | EngineError::Record(_) | EngineError::RecordJson(_) => {
                "RegistryRejected"
            }
        }
    }
}

/// Sign a statement: the DSSE envelope over its canonical bytes, and a cosign simple signature
/// per subject.
pub fn sign(statement: &Statement, signer: &dyn Signer) -> Result<SignedRecord, EngineError> {
    let payload = statement.to_bytes().map_err(EngineError::Statement)?;
    let envelope =
        signing::sign_envelope(signer, signing::IN_TOTO_PAYLOAD_TYPE, &payload)?.to_json()?;
    let mut signatures = Vec::with_capacity(statement.subject.len());
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
        envelope,
        signatures,
        model_signatures: Vec::new(),
    })
}

/// Attach a signed record to every subject, in `encoding` (`provenance.encoding`): the cosign
/// `.att` / `.sig` tags and in-toto referrer, a Sigstore bundle referrer, or both. Returns every
/// reference written.
pub async fn attach(
    record: &SignedRecord,
    store: &dyn AttestationStore,
    encoding: Encoding,
) -> Result<Vec<String>, EngineError> {
    let mut references = Vec::new();
    if encoding.dsse() {
        for attestation in record.attestations()? {
            references.extend(store.attach(&attestation).await?.references);
        }
    }
    if encoding.sigstore_bundle() {
        for bundle in record.bundle_attestations()? {
            references.extend(store.attach_bundle(&bundle).await?.references);
        }
    }
    // Whatever the encoding: model_signing reads only this Sigstore bundle.
    for signature in &record.model_signatures {
        let attached = store
            .attach_model_signature(&signature.subject(), &signature.bundle()?)
            .await?;
        references.extend(attached.references);
    }
    Ok(references)
}

#[cfg(test)]
mod tests;
