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
pub use check::{Untrusted, check_record};

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
}

impl EngineError {
    /// Condition reason (CamelCase, stable).
    pub fn reason(&self) -> &'static str {
        match self {
            EngineError::Signing(_) => "SigningFailed",
            EngineError::Statement(_) => "StatementUnserializable",
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
    Ok(references)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provenance::statement::{ResourceDescriptor, SLSA_PROVENANCE_V1};
    use crate::signing::{CosignKey, Envelope, verify_envelope};

    const ENVELOPE: &str = r#"{"payloadType":"application/vnd.in-toto+json","payload":"e30=","signatures":[{"keyid":"ab","sig":"MEUC"}]}"#;

    /// `record.json` as the first form wrote it (`serde_json::to_string_pretty`, the envelope as
    /// a JSON string), for [`ENVELOPE`].
    const OLD_RECORD_JSON: &str = r#"{
  "predicateType": "https://slsa.dev/provenance/v1",
  "keyId": "ab",
  "envelope": "{\"payloadType\":\"application/vnd.in-toto+json\",\"payload\":\"e30=\",\"signatures\":[{\"keyid\":\"ab\",\"sig\":\"MEUC\"}]}",
  "signatures": [
    {
      "repository": "registry.example.com/models/resnet",
      "digest": "sha256:f3cfc9d0dbf931d3db4685ec659b7ac68e2a578219da4aae65427886e649b06b",
      "payload": "e30=",
      "signature": "MEUC"
    }
  ]
}"#;

    fn statement() -> Statement {
        let run: crate::api::TrainingRun =
            serde_saphyr::from_str(include_str!("../../tests/fixtures/succeeded-run.yaml"))
                .expect("fixture");
        let placement = crate::execute::placement::placement(
            &crate::config::ControllerConfig::defaults(),
            run.spec.accelerator.as_ref(),
        )
        .expect("placement");
        let builder =
            crate::provenance::BuilderIdentity::controller(crate::config::DEFAULT_BUILDER_ID, None);
        crate::provenance::statement_for_run(&run, &placement, &builder).expect("statement")
    }

    #[test]
    fn sign_signs_the_statement_bytes_once_into_the_envelope() {
        let key = CosignKey::ephemeral().expect("key");
        let mut statement = statement();
        statement.subject.push(ResourceDescriptor {
            name: Some("registry.example.com/models/other".into()),
            digest: crate::provenance::digest_map(&format!("sha256:{}", "ab".repeat(32))),
            ..Default::default()
        });
        let record = sign(&statement, &key).expect("signs");
        assert_eq!(record.predicate_type, SLSA_PROVENANCE_V1);
        assert_eq!(record.key_id, key.key_id());
        let envelope = Envelope::from_json(&record.envelope).expect("envelope");
        assert_eq!(
            envelope.to_json().expect("serializes"),
            record.envelope,
            "compact, cosign's field order"
        );
        assert_eq!(
            verify_envelope(&envelope, key.public_key()).expect("verifies"),
            statement.to_bytes().expect("serializes")
        );
        assert_eq!(record.signatures.len(), 2);
        for (s, subject) in record.signatures.iter().zip(&statement.subject) {
            assert_eq!(Some(&s.repository), subject.name.as_ref());
            let payload = STANDARD.decode(&s.payload).expect("base64");
            assert_eq!(
                payload,
                signing::simple_signing::payload(&s.repository, &s.digest)
            );
            let der = STANDARD.decode(&s.signature).expect("base64");
            key.public_key().verify(&payload, &der).expect("verifies");
        }
    }

    #[test]
    fn record_embeds_the_envelope_and_round_trips_its_bytes() {
        let key = CosignKey::ephemeral().expect("key");
        let record = sign(&statement(), &key).expect("signs");
        let digest = record.envelope_digest();
        let text = String::from_utf8(record.to_json().expect("writes")).expect("utf-8");
        // Embedded, not escaped: the envelope's bytes appear verbatim in record.json.
        let envelope = std::str::from_utf8(&record.envelope).expect("utf-8");
        assert!(
            text.contains(&format!("\"envelope\":{envelope},")),
            "{text}"
        );
        let back: SignedRecord = serde_json::from_str(&text).expect("reads");
        assert_eq!(back, record);
        assert_eq!(back.envelope_digest(), digest);
        // Compact serialization too (what the engine benchmark measures).
        let compact = record.to_json().expect("serializes");
        assert_eq!(compact, serde_json::to_vec(&record).expect("serializes"));
        let back: SignedRecord = serde_json::from_slice(&compact).expect("reads");
        assert_eq!(back.envelope, record.envelope);
    }

    #[test]
    fn record_in_the_first_form_reads_to_the_same_envelope_bytes() {
        let record: SignedRecord = serde_json::from_str(OLD_RECORD_JSON).expect("reads");
        assert_eq!(record.envelope, ENVELOPE.as_bytes());
        assert_eq!(
            record.envelope_digest(),
            crate::observe::sha256_digest(ENVELOPE.as_bytes())
        );
        assert_eq!(record.key_id, "ab");
        assert_eq!(record.signatures.len(), 1);
        // Saved again (new form) and read back: nothing changes, the digest least of all.
        let json = record.to_json().expect("writes");
        let again: SignedRecord = serde_json::from_slice(&json).expect("reads");
        assert_eq!(again, record);
        assert!(
            String::from_utf8(json)
                .expect("utf-8")
                .contains("\"envelope\":{")
        );
        // And the attestations it gives carry those bytes.
        let attestations = record.attestations().expect("attestations");
        assert_eq!(attestations[0].envelope, ENVELOPE.as_bytes());
    }

    #[test]
    fn envelope_bytes_that_are_not_one_json_object_are_kept_as_a_string() {
        let key = CosignKey::ephemeral().expect("key");
        let signed =
            String::from_utf8(sign(&statement(), &key).expect("signs").envelope).expect("utf-8");
        for text in [
            "not json".to_string(),
            format!(" {ENVELOPE}"),
            // Whitespace around an object would not survive being embedded.
            format!("{ENVELOPE}\n"),
            r#""abc""#.to_string(),
            r#""\ud800""#.to_string(),
            "[1]".to_string(),
            "{} {}".to_string(),
            r#"{"payload":"abc"}}"#.to_string(),
            r#"{"payload":"abc"#.to_string(),
            signed.replacen("\"signatures\":[", "\"signatures\":", 1),
            String::new(),
        ] {
            let record = SignedRecord {
                predicate_type: SLSA_PROVENANCE_V1.into(),
                key_id: "ab".into(),
                envelope: text.clone().into_bytes(),
                signatures: Vec::new(),
            };
            let json = String::from_utf8(record.to_json().expect("serializes")).expect("utf-8");
            assert!(json.contains("\"envelope\":\""), "{json}");
            let back: SignedRecord = serde_json::from_str(&json).expect("reads");
            assert_eq!(back.envelope, text.as_bytes());
        }
    }

    #[test]
    fn an_envelope_that_is_not_utf8_is_an_error_not_a_lossy_copy() {
        let record = SignedRecord {
            predicate_type: SLSA_PROVENANCE_V1.into(),
            key_id: "ab".into(),
            envelope: b"{\"payload\":\"\xff\"}".to_vec(),
            signatures: Vec::new(),
        };
        let err = record.to_json().expect_err("not UTF-8");
        assert!(matches!(err, EngineError::RecordJson(_)), "{err}");
        assert!(err.to_string().contains("not UTF-8"), "{err}");
    }

    #[test]
    fn serialization_errors_have_their_own_condition_reason() {
        use serde::ser::Error as _;
        let err = EngineError::Statement(serde_json::Error::custom("a map key is not a string"));
        assert_eq!(err.reason(), "StatementUnserializable");
        assert_eq!(
            err.to_string(),
            "cannot serialize the statement: a map key is not a string"
        );
        let err = EngineError::Signing(SigningError::Generate("x".into()));
        assert_eq!(err.reason(), "SigningFailed");
    }

    /// A signer that fails (a KMS or hardware key gone away): a fault a loaded cosign key cannot
    /// produce on demand. Nothing half-signed comes back, and the reason is `SigningFailed`.
    #[test]
    fn a_failing_signer_fails_the_signature_with_its_reason() {
        struct Unplugged;
        impl Signer for Unplugged {
            fn key_id(&self) -> &str {
                "unplugged"
            }
            fn public_key_pem(&self) -> &str {
                ""
            }
            fn sign(&self, _: &[u8]) -> Result<Vec<u8>, SigningError> {
                Err(SigningError::Sign {
                    key_id: "unplugged".into(),
                    reason: "the device is gone".into(),
                })
            }
        }
        let err = sign(&statement(), &Unplugged).expect_err("no signature");
        assert_eq!(err.reason(), "SigningFailed");
        assert!(err.to_string().contains("the device is gone"), "{err}");
    }
}
