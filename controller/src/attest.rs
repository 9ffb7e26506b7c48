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
/// (`"envelope":{"payloadType":...}`), so that writing the record copies them instead of escaping
/// every quote of a string holding them. Reading accepts that and the form records were first
/// written in, the envelope as a JSON string (`"envelope":"{\"payloadType\":...}"`); both give back
/// the exact bytes, so `envelope_digest` does not change across a save and load, nor across an
/// upgrade with records already persisted. Serialize with serde_json only (the embedding is
/// serde_json's `RawValue`), and read from JSON text, not from a `serde_json::Value` (which would
/// reorder the envelope's keys).
mod embedded_json {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_json::value::RawValue;

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(bytes) {
            // An object only: embedded text starting with `"` would read back as the first form.
            Ok(text) if text.starts_with('{') && is_one_json_value(text) => {
                crate::provenance::json::serialize_raw(text, s)
            }
            // Not one JSON object (never the case for an envelope `sign` made): a string, as the
            // first form.
            _ => s.serialize_str(&String::from_utf8_lossy(bytes)),
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

    /// Whether `text` is exactly one JSON value, without whitespace around it (which would not
    /// survive a round trip). The payload of a DSSE envelope (base64, most of its bytes) is
    /// checked for base64 characters, not parsed: a run of characters that are neither `"`, `\`
    /// nor control characters, between two `"`, can be dropped without changing whether the text
    /// is JSON (inside a string it is string content; outside one, a bare word right after a
    /// string, which is invalid with or without it).
    pub(super) fn is_one_json_value(text: &str) -> bool {
        const PAYLOAD: &str = "\"payload\":\"";
        let parses = |t: &str| {
            serde_json::from_str::<&RawValue>(t).is_ok_and(|raw| raw.get().len() == t.len())
        };
        if let Some(key) = text.find(PAYLOAD) {
            let start = key + PAYLOAD.len();
            if let Some(len) = text[start..].find('"') {
                let run = &text.as_bytes()[start..start + len];
                // No early exit: vectorized.
                let base64 = run.iter().fold(true, |all, &b| {
                    all & (b.is_ascii_alphanumeric() | (b == b'+') | (b == b'/') | (b == b'='))
                });
                if base64 {
                    let mut rest = String::with_capacity(text.len() - len);
                    rest.push_str(&text[..start]);
                    rest.push_str(&text[start + len..]);
                    return parses(&rest);
                }
            }
        }
        parses(text)
    }
}

impl SignedRecord {
    /// `sha256:` digest of the envelope bytes (what `status.provenance.envelopeDigest` shows).
    pub fn envelope_digest(&self) -> String {
        sha256_digest(&self.envelope)
    }

    /// The record as compact JSON, the bytes of `serde_json::to_vec(self)`, written into a buffer
    /// sized for it (the envelope makes most of it: tens of kilobytes for a large run, which
    /// growing a buffer by doubling would copy several times).
    pub fn to_json(&self) -> Vec<u8> {
        let signatures: usize = self
            .signatures
            .iter()
            .map(|s| 96 + s.repository.len() + s.digest.len() + s.payload.len() + s.signature.len())
            .sum();
        let mut out = Vec::with_capacity(
            128 + self.predicate_type.len() + self.key_id.len() + self.envelope.len() + signatures,
        );
        // Strings and an embedded JSON value (or a string): serialization cannot fail.
        let _ = crate::provenance::json::append(&mut out, self);
        out
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

/// Sign a statement: the DSSE envelope over it, and a cosign simple signature per subject. The
/// statement is serialized once, into a buffer with room for the PAE header in front; the PAE is
/// signed in place and the payload base64-encoded straight into the envelope's JSON.
pub fn sign(statement: &Statement, signer: &dyn Signer) -> Result<SignedRecord, AttestError> {
    let payload_type = signing::dsse::IN_TOTO_PAYLOAD_TYPE;
    let room = signing::dsse::pae_header_room(payload_type);
    // The payload only lives until it is base64-encoded into the envelope: this thread's scratch
    // buffer holds it.
    let envelope = crate::provenance::json::with_scratch(|buffer| {
        buffer.reserve(room + statement.size_hint());
        buffer.resize(room, 0);
        statement.write_into(buffer);
        signing::dsse::sign_envelope_json_in_place(signer, payload_type, buffer, room)
    })?;
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

    fn config_map(record_json: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("envelope.json".to_string(), ENVELOPE.to_string()),
            ("record.json".to_string(), record_json.to_string()),
        ])
    }

    fn statement() -> Statement {
        let run: crate::api::TrainingRun =
            serde_saphyr::from_str(include_str!("../tests/fixtures/succeeded-run.yaml"))
                .expect("fixture");
        let placement = crate::config::ControllerConfig::defaults()
            .placement(run.spec.accelerator.as_ref())
            .expect("placement");
        let builder = crate::provenance::BuilderIdentity::controller(
            crate::provenance::DEFAULT_BUILDER_ID,
            None,
        );
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
            envelope.to_json(),
            record.envelope,
            "compact, cosign's field order"
        );
        assert_eq!(
            verify_envelope(&envelope, key.public_key()).expect("verifies"),
            statement.to_bytes()
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
        let data = to_config_map_data(&record);
        assert_eq!(data["envelope.json"].as_bytes(), record.envelope.as_slice());
        let text = &data["record.json"];
        // Embedded, not escaped: the envelope's bytes appear verbatim in record.json.
        let envelope = std::str::from_utf8(&record.envelope).expect("utf-8");
        assert!(
            text.contains(&format!("\"envelope\": {envelope},")),
            "{text}"
        );
        let back = from_config_map_data(&data).expect("reads");
        assert_eq!(back, record);
        assert_eq!(back.envelope_digest(), digest);
        // Compact serialization too (what the engine benchmark measures).
        let compact = record.to_json();
        assert_eq!(compact, serde_json::to_vec(&record).expect("serializes"));
        let back: SignedRecord = serde_json::from_slice(&compact).expect("reads");
        assert_eq!(back.envelope, record.envelope);
    }

    #[test]
    fn record_in_the_first_form_reads_to_the_same_envelope_bytes() {
        let record = from_config_map_data(&config_map(OLD_RECORD_JSON)).expect("reads");
        assert_eq!(record.envelope, ENVELOPE.as_bytes());
        assert_eq!(
            record.envelope_digest(),
            crate::observe::sha256_digest(ENVELOPE.as_bytes())
        );
        assert_eq!(record.key_id, "ab");
        assert_eq!(record.signatures.len(), 1);
        // Saved again (new form) and read back: nothing changes, the digest least of all.
        let again = from_config_map_data(&to_config_map_data(&record)).expect("reads");
        assert_eq!(again, record);
        assert!(to_config_map_data(&record)["record.json"].contains("\"envelope\": {"));
        // And the attestations it gives carry those bytes.
        let attestations = record.attestations().expect("attestations");
        assert_eq!(attestations[0].envelope, ENVELOPE.as_bytes());
    }

    #[test]
    fn envelope_bytes_that_are_not_one_json_object_are_kept_as_a_string() {
        for bytes in [
            b"not json".to_vec(),
            format!(" {ENVELOPE}\n").into_bytes(),
            br#""abc""#.to_vec(),
            br#""\ud800""#.to_vec(),
            b"[1]".to_vec(),
            b"{} {}".to_vec(),
            Vec::new(),
        ] {
            let record = SignedRecord {
                predicate_type: SLSA_PROVENANCE_V1.into(),
                key_id: "ab".into(),
                envelope: bytes.clone(),
                signatures: Vec::new(),
            };
            let text = serde_json::to_string(&record).expect("serializes");
            assert!(text.contains("\"envelope\":\""), "{text}");
            let back: SignedRecord = serde_json::from_str(&text).expect("reads");
            assert_eq!(back.envelope, bytes);
        }
    }

    #[test]
    fn one_json_value_is_recognized_with_or_without_a_payload_shortcut() {
        let key = CosignKey::ephemeral().expect("key");
        let envelope = sign(&statement(), &key).expect("signs").envelope;
        let envelope = String::from_utf8(envelope).expect("utf-8");
        for (text, json) in [
            (envelope.as_str(), true),
            (ENVELOPE, true),
            (r#"{"payload":""}"#, true),
            (r#"{"payload":"a"}"#, true),
            (r#"{"payload":"a\"b"}"#, true),
            (r#"{"payload":"ab=="}"#, true),
            (r#"["x","payload":"abc"]"#, false),
            (r#"{"payload":"abc"}}"#, false),
            (r#"{"payload":"abc" "#, false),
            (r#"{"payload":"abc"#, false),
            (r#"{"a":"\"payload\":\"abc\""}"#, true),
            (r#"{"a":"x"payload":"abc"}"#, false),
            (r#" {"payload":"abc"}"#, false),
            ("", false),
            ("{} {}", false),
        ] {
            assert_eq!(embedded_json::is_one_json_value(text), json, "{text}");
        }
        // Broken anywhere outside the payload: still refused.
        let broken = envelope.replacen("\"signatures\":[", "\"signatures\":", 1);
        assert!(!embedded_json::is_one_json_value(&broken));
        let broken = envelope.replacen("{\"payloadType\"", "{payloadType\"", 1);
        assert!(!embedded_json::is_one_json_value(&broken));
    }

    #[test]
    fn unreadable_records_are_errors() {
        let err = from_config_map_data(&BTreeMap::new()).expect_err("missing");
        assert!(err.to_string().contains("record.json is missing"), "{err}");
        let err = from_config_map_data(&config_map("{")).expect_err("truncated");
        assert!(err.to_string().contains("record.json"), "{err}");
    }
}
