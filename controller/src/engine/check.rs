//! Before a persisted record is used (attached again after a crash or an outage), it must prove
//! it is the controller's own for this run: the envelope verifies with the controller's key, its
//! statement is for this run (`invocationId` = the run's UID) and names exactly the run's resolved
//! outputs, and each cosign simple signature signs its subject with the same key. Records are
//! kept where tenants cannot write; this check is what still holds if one is edited anyway, or
//! was signed with a key since rotated away.

use std::collections::BTreeSet;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::SignedRecord;
use crate::provenance::model_signing::{self, ModelSignatureStatement};
use crate::provenance::statement::Statement;
use crate::signing::{Envelope, PublicKey, simple_signing, verify_envelope};
use crate::storage::Subject;

/// Why a persisted record may not be used, in words for the run's condition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Untrusted(pub String);

/// Check `record` against what the controller knows: its key, the run's UID and the run's
/// resolved outputs (`subjects`).
pub fn check_record(
    record: &SignedRecord,
    key: &PublicKey,
    invocation_id: &str,
    subjects: &[Subject],
) -> Result<(), Untrusted> {
    let untrusted = |why: String| Untrusted(why);
    let envelope = Envelope::from_json(&record.envelope)
        .map_err(|e| untrusted(format!("its envelope is not a DSSE envelope: {e}")))?;
    let payload = verify_envelope(&envelope, key).map_err(|e| {
        untrusted(format!(
            "its envelope does not verify with the controller's key {}: {e}",
            key.key_id()
        ))
    })?;
    let statement: Statement = serde_json::from_slice(&payload)
        .map_err(|e| untrusted(format!("its statement does not parse: {e}")))?;
    let invocation = &statement.predicate.run_details.metadata.invocation_id;
    if invocation != invocation_id {
        return Err(untrusted(format!(
            "its statement is for invocation {invocation:?}, not this run ({invocation_id})"
        )));
    }
    if statement.predicate_type != record.predicate_type {
        return Err(untrusted(format!(
            "it says predicate type {:?}, its statement {:?}",
            record.predicate_type, statement.predicate_type
        )));
    }
    let expected: BTreeSet<String> = subjects.iter().map(ToString::to_string).collect();
    let signed: BTreeSet<String> = statement
        .subject
        .iter()
        .map(|s| {
            let name = s.name.as_deref().unwrap_or_default();
            let digest = s
                .digest
                .get("sha256")
                .map_or_else(String::new, |h| format!("sha256:{h}"));
            Subject::new(name.to_string(), digest).to_string()
        })
        .collect();
    if signed != expected {
        return Err(untrusted(format!(
            "its statement names {}, the run's resolved outputs are {}",
            list(&signed),
            list(&expected)
        )));
    }
    let with_signatures: BTreeSet<String> =
        record.subjects().iter().map(ToString::to_string).collect();
    if with_signatures != expected || record.signatures.len() != expected.len() {
        return Err(untrusted(format!(
            "its simple signatures are for {}, the run's resolved outputs are {}",
            list(&with_signatures),
            list(&expected)
        )));
    }
    for s in &record.signatures {
        let payload = STANDARD.decode(&s.payload).unwrap_or_default();
        if payload != simple_signing::payload(&s.repository, &s.digest) {
            return Err(untrusted(format!(
                "its simple-signing payload for {}@{} is not the one for that subject",
                s.repository, s.digest
            )));
        }
        let signature = STANDARD.decode(&s.signature).unwrap_or_default();
        if key.verify(&payload, &signature).is_err() {
            return Err(untrusted(format!(
                "its simple signature for {}@{} does not verify with the controller's key {}",
                s.repository,
                s.digest,
                key.key_id()
            )));
        }
    }
    check_model_signatures(record, key, &expected)
}

/// Each model signature is for one of the run's resolved outputs (at most one each), verifies
/// with the key and signs a model-signing statement.
fn check_model_signatures(
    record: &SignedRecord,
    key: &PublicKey,
    expected: &BTreeSet<String>,
) -> Result<(), Untrusted> {
    let mut seen = BTreeSet::new();
    for m in &record.model_signatures {
        let model = m.subject().to_string();
        if !expected.contains(&model) || !seen.insert(model.clone()) {
            return Err(Untrusted(format!(
                "it has a model signature for {model}, which is not one of the run's resolved outputs ({}) or is signed twice",
                list(expected)
            )));
        }
        let payload = Envelope::from_json(&m.envelope)
            .and_then(|e| verify_envelope(&e, key))
            .map_err(|e| {
                Untrusted(format!(
                    "its model signature for {model} does not verify with the controller's key {}: {e}",
                    key.key_id()
                ))
            })?;
        let statement: ModelSignatureStatement = serde_json::from_slice(&payload).map_err(|e| {
            Untrusted(format!(
                "its model signature for {model} does not parse: {e}"
            ))
        })?;
        if statement.predicate_type != model_signing::PREDICATE_TYPE {
            return Err(Untrusted(format!(
                "its model signature for {model} has predicate type {:?}",
                statement.predicate_type
            )));
        }
    }
    Ok(())
}

fn list(items: &BTreeSet<String>) -> String {
    if items.is_empty() {
        "nothing".into()
    } else {
        items.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::sign;
    use crate::provenance::statement::{
        BuildDefinition, BuildMetadata, Builder, Object, Provenance, ResourceDescriptor,
        RunDetails, SLSA_PROVENANCE_V1, STATEMENT_TYPE,
    };
    use crate::signing::CosignKey;
    use crate::signing::Signer;

    const UID: &str = "6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f";

    fn hex(c: char) -> String {
        c.to_string().repeat(64)
    }

    fn statement(invocation: &str, subjects: &[(&str, char)]) -> Statement {
        Statement {
            type_: STATEMENT_TYPE.into(),
            subject: subjects
                .iter()
                .map(|(name, c)| ResourceDescriptor {
                    name: Some(name.to_string()),
                    digest: [("sha256".to_string(), hex(*c))].into(),
                    ..Default::default()
                })
                .collect(),
            predicate_type: SLSA_PROVENANCE_V1.into(),
            predicate: Provenance {
                build_definition: BuildDefinition {
                    build_type: "https://provenant.dev/TrainingRun/v1".into(),
                    external_parameters: Object::empty(),
                    internal_parameters: Object::empty(),
                    resolved_dependencies: vec![],
                },
                run_details: RunDetails {
                    builder: Builder {
                        id: "b".into(),
                        version: Default::default(),
                    },
                    metadata: BuildMetadata {
                        invocation_id: invocation.into(),
                        started_on: None,
                        finished_on: None,
                    },
                    byproducts: vec![],
                },
            },
        }
    }

    fn ours() -> Vec<Subject> {
        vec![Subject::new(
            "reg.io/team-a/model",
            format!("sha256:{}", hex('a')),
        )]
    }

    fn public(key: &CosignKey) -> PublicKey {
        PublicKey::from_pem(key.public_key_pem()).expect("public key")
    }

    #[test]
    fn the_controllers_own_record_for_this_run_passes() {
        let key = CosignKey::ephemeral().expect("key");
        let record = sign(&statement(UID, &[("reg.io/team-a/model", 'a')]), &key).expect("signs");
        check_record(&record, &public(&key), UID, &ours()).expect("trusted");
    }

    #[test]
    fn a_record_signed_elsewhere_for_elsewhere_is_refused_naming_why() {
        let controller = CosignKey::ephemeral().expect("key");
        let tenant = CosignKey::ephemeral().expect("key");
        let cases = [
            // The tenant's own key, naming another team's model.
            (
                sign(&statement(UID, &[("reg.io/team-b/model", 'b')]), &tenant),
                "does not verify with the controller's key",
            ),
            // The controller's key, but another run's statement (replayed from the registry).
            (
                sign(
                    &statement("another-uid", &[("reg.io/team-a/model", 'a')]),
                    &controller,
                ),
                "not this run",
            ),
            // The controller's key, this run, but not the run's outputs.
            (
                sign(
                    &statement(UID, &[("reg.io/team-b/model", 'b')]),
                    &controller,
                ),
                "the run's resolved outputs are reg.io/team-a/model@",
            ),
        ];
        for (record, why) in cases {
            let err = check_record(&record.expect("signs"), &public(&controller), UID, &ours())
                .expect_err("refused");
            assert!(err.0.contains(why), "{err} (wanted: {why})");
        }
    }

    #[test]
    fn swapped_simple_signatures_and_edited_envelopes_are_refused() {
        let key = CosignKey::ephemeral().expect("key");
        let good = sign(&statement(UID, &[("reg.io/team-a/model", 'a')]), &key).expect("signs");
        // A simple signature over another team's model, signed by the controller for another run.
        let other = sign(&statement(UID, &[("reg.io/team-b/model", 'b')]), &key).expect("signs");
        let mut swapped = good.clone();
        swapped.signatures = other.signatures.clone();
        let err = check_record(&swapped, &public(&key), UID, &ours()).expect_err("refused");
        assert!(
            err.0
                .contains("simple signatures are for reg.io/team-b/model"),
            "{err}"
        );
        // One byte of the envelope changed.
        let mut edited = good.clone();
        let at = edited.envelope.len() / 2;
        edited.envelope[at] = if edited.envelope[at] == b'A' {
            b'B'
        } else {
            b'A'
        };
        assert!(check_record(&edited, &public(&key), UID, &ours()).is_err());
        // A signature over the right payload by another key.
        let mut forged = good;
        let tenant = CosignKey::ephemeral().expect("key");
        forged.signatures[0].signature = STANDARD.encode(
            tenant
                .sign(&simple_signing::payload(
                    "reg.io/team-a/model",
                    &format!("sha256:{}", hex('a')),
                ))
                .expect("signs"),
        );
        let err = check_record(&forged, &public(&key), UID, &ours()).expect_err("refused");
        assert!(err.0.contains("does not verify"), "{err}");
    }

    #[test]
    fn model_signatures_must_be_the_controllers_for_the_runs_outputs() {
        use crate::engine::{Model, sign_models};
        use crate::storage::ModelLayer;
        let key = CosignKey::ephemeral().expect("key");
        let mut record =
            sign(&statement(UID, &[("reg.io/team-a/model", 'a')]), &key).expect("signs");
        let files = vec![ModelLayer {
            title: "w.bin".into(),
            digest: format!("sha256:{}", hex('c')),
            size: 1,
        }];
        let model = |subject: Subject| Model {
            subject,
            files: files.clone(),
        };
        record.model_signatures = sign_models(&[model(ours()[0].clone())], &key).expect("signs");
        check_record(&record, &public(&key), UID, &ours()).expect("trusted");

        let tenant = CosignKey::ephemeral().expect("key");
        let mut foreign = record.clone();
        foreign.model_signatures =
            sign_models(&[model(ours()[0].clone())], &tenant).expect("signs");
        let err = check_record(&foreign, &public(&key), UID, &ours()).expect_err("refused");
        assert!(
            err.0.contains("model signature for reg.io/team-a/model@"),
            "{err}"
        );
        assert!(err.0.contains("does not verify"), "{err}");

        let mut elsewhere = record.clone();
        let other = Subject::new("reg.io/team-b/model", format!("sha256:{}", hex('b')));
        elsewhere.model_signatures = sign_models(&[model(other)], &key).expect("signs");
        let err = check_record(&elsewhere, &public(&key), UID, &ours()).expect_err("refused");
        assert!(
            err.0.contains("not one of the run's resolved outputs"),
            "{err}"
        );

        let mut twice = record.clone();
        twice
            .model_signatures
            .push(record.model_signatures[0].clone());
        assert!(check_record(&twice, &public(&key), UID, &ours()).is_err());
    }
}
