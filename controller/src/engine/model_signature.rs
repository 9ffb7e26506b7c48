//! The model signature of each attested model, next to its provenance: the OpenSSF
//! model-signing statement over the model's files (`provenance::model_signing`), signed with the
//! provenance key into a DSSE envelope, and attached as the Sigstore bundle `model_signing sign
//! key` writes (`model.sig`), so `model_signing verify key` checks the pulled files with the
//! controller's public key. docs/model-signing.md.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::EngineError;
use crate::provenance::model_signing::{self, ModelFileDigest, ModelSignatureStatement};
use crate::signing::{
    Envelope, EnvelopeSignature, IN_TOTO_PAYLOAD_TYPE, PublicKey, Signer, SigstoreBundle, pae,
};
use crate::storage::{ModelLayer, Subject};

/// A stored model and its files, as its manifest lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    pub subject: Subject,
    pub files: Vec<ModelLayer>,
}

/// One model's signature, persisted with the provenance record (ECDSA signatures are
/// randomized: attaching again after a crash must attach the same bundle).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelSignature {
    /// The model: repository and manifest digest.
    pub repository: String,
    pub digest: String,
    /// `verificationMaterial.publicKey.hint` as `model_signing` writes and checks it.
    pub key_hint: String,
    /// The DSSE envelope over the model-signing statement, exact bytes (JSON).
    #[serde(with = "super::embedded_json")]
    pub envelope: Vec<u8>,
}

impl ModelSignature {
    /// The model.
    pub fn subject(&self) -> Subject {
        Subject::new(self.repository.clone(), self.digest.clone())
    }

    /// The Sigstore bundle (`model.sig`): the envelope and the key hint, no transparency-log
    /// entry. The same signature always gives the same bytes.
    pub fn bundle(&self) -> Result<Vec<u8>, EngineError> {
        let envelope = Envelope::from_json(&self.envelope)?;
        let bundle = SigstoreBundle {
            envelope,
            key_hint: Some(self.key_hint.clone()),
            tlog_entries: 0,
        };
        bundle.to_json().map_err(EngineError::Bundle)
    }
}

/// `model_signing`'s key hint: lowercase hex SHA-256 of the public key's PEM as Python's
/// `cryptography` writes it (SubjectPublicKeyInfo, 64-column lines, LF) — `sign_ec_key.py`
/// `Signer._get_verification_material`; `Verifier._verify_bundle` refuses a bundle whose hint is
/// another key's. The PEM is rebuilt from the key, so a `cosign.pub` with other line endings
/// gives the same hint. (cosign's hint is another digest: base64 of the SHA-256 of the DER.)
pub fn key_hint(public_key_pem: &str) -> Result<String, EngineError> {
    let key = PublicKey::from_pem(public_key_pem)?;
    Ok(hex::encode(Sha256::digest(key.pem().as_bytes())))
}

/// The name `model_signing` gives a model: its directory's name. Here the last path component
/// of the repository (`registry.example.com/models/mnist` → `mnist`), the directory a user pulls
/// it into by default. Only informative: `model_signing verify` does not compare it.
pub fn model_name(repository: &str) -> &str {
    repository
        .rsplit('/')
        .find(|c| !c.is_empty())
        .unwrap_or("model")
}

/// Sign the model-signing statement of every model with `signer`. The envelope carries the
/// signature with an empty `keyid`, as `model_signing` writes it (it reads the first signature
/// and ignores the key id).
pub fn sign_models(
    models: &[Model],
    signer: &dyn Signer,
) -> Result<Vec<ModelSignature>, EngineError> {
    let hint = key_hint(signer.public_key_pem())?;
    models
        .iter()
        .map(|model| {
            let files: Vec<ModelFileDigest> = model
                .files
                .iter()
                .map(|f| ModelFileDigest {
                    path: f.title.clone(),
                    digest: f.digest.clone(),
                })
                .collect();
            let statement = model_signing::statement(model_name(&model.subject.repository), &files)
                .map_err(|e| EngineError::ModelSignature {
                    model: model.subject.to_string(),
                    source: e,
                })?;
            let envelope = sign_statement(&statement, signer)?;
            Ok(ModelSignature {
                repository: model.subject.repository.clone(),
                digest: model.subject.digest.clone(),
                key_hint: hint.clone(),
                envelope,
            })
        })
        .collect()
}

fn sign_statement(
    statement: &ModelSignatureStatement,
    signer: &dyn Signer,
) -> Result<Vec<u8>, EngineError> {
    let payload = statement.to_bytes().map_err(EngineError::Statement)?;
    let signature = signer.sign(&pae(IN_TOTO_PAYLOAD_TYPE, &payload))?;
    let envelope = Envelope {
        payload_type: IN_TOTO_PAYLOAD_TYPE.to_string(),
        payload: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &payload),
        signatures: vec![EnvelopeSignature {
            keyid: String::new(),
            sig: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, signature),
        }],
    };
    Ok(envelope.to_json()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::{CosignKey, verify_envelope};

    fn model() -> Model {
        Model {
            subject: Subject::new(
                "registry.example.com/models/mnist",
                format!("sha256:{}", "c".repeat(64)),
            ),
            files: vec![
                ModelLayer {
                    title: "weights/w.bin".into(),
                    digest: format!("sha256:{}", "a".repeat(64)),
                    size: 3,
                },
                ModelLayer {
                    title: "config.json".into(),
                    digest: format!("sha256:{}", "b".repeat(64)),
                    size: 2,
                },
            ],
        }
    }

    #[test]
    fn the_signature_verifies_with_the_key_and_carries_the_statement() {
        let key = CosignKey::ephemeral().expect("key");
        let signed = sign_models(&[model()], &key).expect("signs");
        assert_eq!(signed.len(), 1);
        let s = &signed[0];
        assert_eq!(s.subject(), model().subject);
        let envelope = Envelope::from_json(&s.envelope).expect("envelope");
        assert_eq!(envelope.signatures[0].keyid, "");
        let payload = verify_envelope(&envelope, key.public_key()).expect("verifies");
        let statement: ModelSignatureStatement = serde_json::from_slice(&payload).expect("OMS");
        assert_eq!(statement.subject[0].name.as_deref(), Some("mnist"));
        let names: Vec<_> = statement
            .predicate
            .resources
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(names, ["config.json", "weights/w.bin"]);

        let bundle = SigstoreBundle::from_json(&s.bundle().expect("bundle")).expect("reads");
        assert_eq!(bundle.envelope, envelope);
        assert_eq!(bundle.key_hint.as_deref(), Some(s.key_hint.as_str()));
        assert_eq!(s.bundle().unwrap(), s.bundle().unwrap(), "same bytes");
    }

    #[test]
    fn the_hint_is_the_sha256_of_the_canonical_pem() {
        let key = CosignKey::ephemeral().expect("key");
        let pem = key.public_key_pem();
        let want = hex::encode(Sha256::digest(pem.as_bytes()));
        assert_eq!(key_hint(pem).unwrap(), want);
        assert_eq!(key_hint(&pem.replace('\n', "\r\n")).unwrap(), want);
        assert!(key_hint("not a key").is_err());
    }

    #[test]
    fn a_model_that_cannot_be_stated_is_an_error_naming_model_and_file() {
        let key = CosignKey::ephemeral().expect("key");
        let mut bad = model();
        bad.files[0].title = "../escape".into();
        let err = sign_models(&[bad], &key).expect_err("refused");
        let text = err.to_string();
        assert!(
            text.contains("registry.example.com/models/mnist@sha256:ccc"),
            "{text}"
        );
        assert!(text.contains("\"../escape\""), "{text}");
    }

    #[test]
    fn model_names_are_the_last_path_component() {
        assert_eq!(model_name("registry.example.com/models/mnist"), "mnist");
        assert_eq!(model_name("host:5000/m/"), "m");
        assert_eq!(model_name("oci:dir"), "oci:dir");
        assert_eq!(model_name(""), "model");
    }
}
