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
            model_signatures: Vec::new(),
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
        model_signatures: Vec::new(),
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
