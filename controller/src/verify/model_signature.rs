//! `provenant verify`'s check of a model's OpenSSF model signature (`model.sig`, attached by
//! provenant next to the provenance; docs/model-signing.md): the signature verifies with the
//! key, the statement is a model-signing v1.0 statement consistent with itself, and its files
//! are exactly the model's — the resources recomputed from the model's manifest layers (a
//! layer's digest is its file's sha256, its title the file's path), as `model_signing verify`
//! would recompute them from the pulled files. Pure over what the store found.
//!
//! A model with model signatures verifies only if one of them passes. A model without one is
//! reported and passes, since models attested before provenant wrote them have none, unless
//! `--require-model-signature` is given.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Verdict;
use crate::provenance::model_signing::{
    self, METHOD_FILES, ModelFileDigest, ModelSignatureStatement, PREDICATE_TYPE, Resource, SHA256,
};
use crate::provenance::statement::STATEMENT_TYPE;
use crate::signing::PublicKey;
use crate::signing::SigstoreBundle;
use crate::signing::dsse::{IN_TOTO_PAYLOAD_TYPE, verify_envelope};
use crate::storage::{FoundModelSignature, ModelLayer};

/// The outcome of the model-signature check, part of the verdict.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelSignatureCheck {
    pub status: Status,
    /// `--require-model-signature` was given.
    pub required: bool,
    /// Files covered by the verified signature (the model's, less those `model_signing` skips).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<usize>,
    /// Every model signature found, with why each failed.
    pub signatures: Vec<CheckedModelSignature>,
}

/// What the check concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// A model signature verified and names exactly the model's files.
    Verified,
    /// None attached.
    Absent,
    /// Some attached, none passed.
    Failed,
    /// The artifact is not a provenant model: it has no files to sign.
    NotAModel,
}

/// One model signature as found.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckedModelSignature {
    pub found_at: String,
    pub failures: Vec<String>,
}

impl ModelSignatureCheck {
    /// Whether the verdict stands: a found signature passed, or none is needed.
    pub fn passes(&self) -> bool {
        match self.status {
            Status::Verified => true,
            Status::Absent | Status::NotAModel => !self.required,
            Status::Failed => false,
        }
    }

    /// The reasons it fails the verdict (empty when it passes).
    pub fn failures(&self) -> Vec<String> {
        if self.passes() {
            return Vec::new();
        }
        match self.status {
            Status::Absent => vec![format!(
                "model signature: none attached ({} referrer titled model.sig), and --require-model-signature requires one",
                PREDICATE_TYPE
            )],
            Status::NotAModel => vec![
                "model signature: the artifact is not a provenant model (no file layers to sign), and --require-model-signature requires one".to_string(),
            ],
            _ => self
                .signatures
                .iter()
                .flat_map(|s| {
                    s.failures
                        .iter()
                        .map(move |f| format!("model signature {}: {f}", s.found_at))
                })
                .collect(),
        }
    }

    /// One line for the summary.
    pub fn describe(&self) -> String {
        match self.status {
            Status::Verified => format!(
                "verified (OpenSSF model signing, {} files)",
                self.files.unwrap_or_default()
            ),
            Status::Absent if self.required => "none attached (required)".into(),
            Status::Absent => {
                "none attached (not required; --require-model-signature requires one)".into()
            }
            Status::NotAModel => "not a provenant model: no files to sign".into(),
            Status::Failed => "failed".into(),
        }
    }
}

/// Check the model signatures found (their Sigstore bundles) against the model's files (`None`:
/// the artifact is not a provenant model).
pub fn check(
    files: Option<&[ModelLayer]>,
    found: &[FoundModelSignature],
    key: &PublicKey,
    required: bool,
) -> ModelSignatureCheck {
    let mut out = ModelSignatureCheck {
        status: Status::Absent,
        required,
        files: None,
        signatures: Vec::new(),
    };
    let Some(files) = files else {
        out.status = Status::NotAModel;
        return out;
    };
    if found.is_empty() {
        return out;
    }
    out.status = Status::Failed;
    for f in found {
        let (failures, covered) = match check_one(files, &f.bundle, key) {
            Ok(covered) => (Vec::new(), Some(covered)),
            Err(failures) => (failures, None),
        };
        if covered.is_some() && out.files.is_none() {
            out.status = Status::Verified;
            out.files = covered;
        }
        out.signatures.push(CheckedModelSignature {
            found_at: f.reference.clone(),
            failures,
        });
    }
    out
}

/// One signature (its bundle): the number of files it covers, or every reason it fails. The
/// bundle's key hint is not checked: it only names a key, the signature is what counts.
fn check_one(files: &[ModelLayer], bundle: &[u8], key: &PublicKey) -> Result<usize, Vec<String>> {
    let one = |why: String| vec![why];
    let envelope = SigstoreBundle::from_json(bundle)
        .map_err(|e| one(e.to_string()))?
        .envelope;
    let payload = verify_envelope(&envelope, key).map_err(|e| one(format!("signature: {e}")))?;
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE {
        return Err(one(format!(
            "payloadType is {:?}, not {IN_TOTO_PAYLOAD_TYPE}",
            envelope.payload_type
        )));
    }
    let statement: ModelSignatureStatement = serde_json::from_slice(&payload)
        .map_err(|e| one(format!("not a model-signing statement: {e}")))?;
    let mut failures = Vec::new();
    if statement.type_ != STATEMENT_TYPE {
        failures.push(format!(
            "_type is {:?}, not {STATEMENT_TYPE}",
            statement.type_
        ));
    }
    if statement.predicate_type != PREDICATE_TYPE {
        failures.push(format!(
            "predicateType is {:?}, not {PREDICATE_TYPE}",
            statement.predicate_type
        ));
    }
    let serialization = &statement.predicate.serialization;
    if serialization.method != METHOD_FILES || serialization.hash_type != SHA256 {
        // Shards (or another hash) cannot be recomputed from layer digests.
        failures.push(format!(
            "serialization is {} with {}; provenant checks {METHOD_FILES} with {SHA256} (use model_signing verify on the files)",
            serialization.method, serialization.hash_type
        ));
        return Err(failures);
    }
    let root = model_signing::root_digest(&statement.predicate.resources);
    match statement.subject_digest() {
        Err(e) => failures.push(e),
        Ok(d) if d != root => failures.push(format!(
            "the statement is inconsistent: its subject digest is {d}, its resources hash to {root}"
        )),
        Ok(_) => {}
    }
    let expected = match expected_resources(files, &serialization.ignore_paths) {
        Ok(r) => r,
        Err(e) => {
            failures.push(format!("the model's manifest cannot be checked: {e}"));
            return Err(failures);
        }
    };
    failures.extend(differences(&expected, &statement.predicate.resources));
    if failures.is_empty() {
        Ok(expected.len())
    } else {
        Err(failures)
    }
}

/// The resources `model_signing verify` would compute from the model's files pulled into a
/// directory: every layer, less what it skips by default and what the signature says it skipped.
fn expected_resources(
    files: &[ModelLayer],
    signed_ignores: &[String],
) -> Result<Vec<Resource>, model_signing::ModelSigningError> {
    let kept: Vec<ModelFileDigest> = files
        .iter()
        .filter(|f| !signed_ignores.iter().any(|i| is_under(&f.title, i)))
        .map(|f| ModelFileDigest {
            path: f.title.clone(),
            digest: f.digest.clone(),
        })
        .collect();
    model_signing::resources(&kept)
}

/// `path` is `ignored` or under it, as `model_signing` compares them (`is_relative_to` of paths
/// joined to the model directory; `.` components do not count).
fn is_under(path: &str, ignored: &str) -> bool {
    let parts = |p: &str| -> Vec<String> {
        p.split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .map(String::from)
            .collect()
    };
    let (path, ignored) = (parts(path), parts(ignored));
    path.starts_with(&ignored)
}

/// Each file whose digest differs, or that only one side has, named.
fn differences(model: &[Resource], signed: &[Resource]) -> Vec<String> {
    let by_name = |r: &[Resource]| -> BTreeMap<String, String> {
        r.iter()
            .map(|r| (r.name.clone(), format!("{}:{}", r.algorithm, r.digest)))
            .collect()
    };
    let (model, signed) = (by_name(model), by_name(signed));
    let mut out = Vec::new();
    for (name, digest) in &model {
        match signed.get(name) {
            None => out.push(format!(
                "model file {name} ({digest}) is not in the signed files"
            )),
            Some(s) if s != digest => out.push(format!(
                "model file {name} is {digest} in the model, {s} in the signature"
            )),
            Some(_) => {}
        }
    }
    for (name, digest) in &signed {
        if !model.contains_key(name) {
            out.push(format!("signed file {name} ({digest}) is not in the model"));
        }
    }
    out
}

impl Verdict {
    /// Add the model-signature check: its failures fail the verdict.
    pub fn with_model_signature(mut self, check: ModelSignatureCheck) -> Self {
        let failures = check.failures();
        self = self.with_content_failures(failures);
        self.model_signature = Some(check);
        self
    }
}

#[cfg(test)]
mod tests;
