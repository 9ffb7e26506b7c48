//! `provenant verify`: decide whether an artifact's attestations prove what a security team
//! requires. Pure over the envelopes found (the storage layer finds them): signature, statement
//! shape, subject digest, then the policy flags. Every failed check is a reason in words. Who
//! vouched for each dataset digest is read in `datasets`; revocation statements among the
//! attestations, in `revocation`.

mod datasets;
pub mod model_signature;
pub mod pull;
pub mod rego;
mod render;
pub mod revocation;
mod summary;

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use serde_json::Value;

use crate::provenance::statement::{SLSA_PROVENANCE_V1, STATEMENT_TYPE, Statement};
use crate::signing::PublicKey;
use crate::signing::dsse::{Envelope, IN_TOTO_PAYLOAD_TYPE, verify_envelope};

pub use datasets::{DatasetEvidence, DatasetRequirement, Party, evidence};
pub use render::render;
pub use revocation::{AttestationKind, Revoked};
pub use summary::{Summary, summarize};

/// What the verifier requires beyond a valid signature over a statement about the artifact.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// `runDetails.builder.id` must equal this.
    pub builder_id: Option<String>,
    /// Each of these must be a dataset digest the spec declared or provenant observed.
    pub datasets: Vec<DatasetRequirement>,
    /// Also accept dataset digests only the workload reported (`--allow-reported-datasets`).
    pub allow_reported_datasets: bool,
    /// Each of these digests must be an image dependency.
    pub images: Vec<String>,
    /// The build must have finished at most this long ago.
    pub max_age: Option<SignedDuration>,
}

/// One attestation as found, with the outcome of its checks.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Checked {
    /// Where it was found (`...:sha256-<hex>.att`, a referrer digest, ...).
    pub found_at: String,
    /// `sha256:` of the envelope bytes.
    pub envelope_digest: String,
    /// Why it does not verify; empty when it does.
    pub failures: Vec<String>,
    /// What it is, once its signature verified and its payload parsed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<AttestationKind>,
    /// The statement, when the signature verified and it parsed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statement: Option<Value>,
}

impl Checked {
    pub fn verified(&self) -> bool {
        self.failures.is_empty()
    }

    /// A verified SLSA provenance statement: what can verify the artifact.
    fn verified_provenance(&self) -> bool {
        self.verified() && self.kind == Some(AttestationKind::Provenance)
    }
}

/// The verdict on an artifact.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    pub artifact: String,
    pub digest: String,
    pub verified: bool,
    /// Problems with the artifact's own content (files that do not match their digests).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content_failures: Vec<String>,
    pub attestations: Vec<Checked>,
    /// Revocations in force against the artifact (verified revocation statements about it, not
    /// reinstated): any of them fails the verdict.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revoked: Vec<Revoked>,
    /// How many revocations of the artifact were withdrawn (a signed reinstatement).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reinstated: usize,
    /// The summary of the first verified statement.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    /// The model's OpenSSF model signature, when checked (`model_signature`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_signature: Option<model_signature::ModelSignatureCheck>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Check every envelope; the artifact verifies when at least one provenance statement passes
/// every check and no verified revocation statement about it is in force.
pub fn verify(
    artifact: &str,
    digest: &str,
    found: &[(String, Vec<u8>)],
    key: &PublicKey,
    policy: &Policy,
    now: Timestamp,
) -> Verdict {
    let attestations: Vec<Checked> = found
        .iter()
        .map(|(at, bytes)| check(at, bytes, digest, key, policy, now))
        .collect();
    let (revoked, reinstated) = revocation::in_force(&attestations);
    Verdict {
        artifact: artifact.to_string(),
        digest: digest.to_string(),
        verified: false,
        content_failures: Vec::new(),
        attestations,
        revoked,
        reinstated,
        summary: None,
        model_signature: None,
    }
    .settled()
}

impl Verdict {
    /// Re-derive the verdict after checks run outside [`verify`] (the Rego policies) added
    /// failures to its attestations: the summary is of the first attestation still passing.
    pub fn settled(mut self) -> Self {
        self.summary = self
            .attestations
            .iter()
            .find(|c| c.verified_provenance())
            .and_then(|c| c.statement.as_ref())
            .map(summarize);
        self.verified =
            self.summary.is_some() && self.content_failures.is_empty() && self.revoked.is_empty();
        self
    }

    /// Add problems found in the artifact's content; any of them fails the verdict (a valid
    /// attestation of a manifest proves nothing if the files it names were changed).
    pub fn with_content_failures(mut self, failures: Vec<String>) -> Self {
        if !failures.is_empty() {
            self.verified = false;
        }
        self.content_failures.extend(failures);
        self
    }
}

fn check(
    at: &str,
    bytes: &[u8],
    digest: &str,
    key: &PublicKey,
    policy: &Policy,
    now: Timestamp,
) -> Checked {
    let mut checked = Checked {
        found_at: at.to_string(),
        envelope_digest: crate::observe::sha256_digest(bytes),
        failures: Vec::new(),
        kind: None,
        statement: None,
    };
    let envelope = match Envelope::from_json(bytes) {
        Ok(e) => e,
        Err(e) => {
            checked.failures.push(format!("not a DSSE envelope: {e}"));
            return checked;
        }
    };
    let payload = match verify_envelope(&envelope, key) {
        Ok(p) => p,
        Err(e) => {
            checked.failures.push(format!("signature: {e}"));
            return checked;
        }
    };
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE {
        checked.failures.push(format!(
            "payloadType is {:?}, not {IN_TOTO_PAYLOAD_TYPE}",
            envelope.payload_type
        ));
    }
    let value: Value = match serde_json::from_slice(&payload) {
        Ok(v) => v,
        Err(e) => {
            checked.failures.push(format!("payload is not JSON: {e}"));
            return checked;
        }
    };
    if let Some(failures) = revocation::check(&payload, digest) {
        checked.failures.extend(failures);
        checked.kind = Some(AttestationKind::Revocation);
        checked.statement = Some(value);
        return checked;
    }
    checked.kind = Some(AttestationKind::Provenance);
    match serde_json::from_value::<Statement>(value.clone()) {
        Err(e) => checked.failures.push(format!(
            "payload is not an in-toto Statement with a SLSA v1 predicate: {e}"
        )),
        Ok(statement) => {
            if statement.type_ != STATEMENT_TYPE {
                checked.failures.push(format!(
                    "_type is {:?}, not {STATEMENT_TYPE}",
                    statement.type_
                ));
            }
            if statement.predicate_type != SLSA_PROVENANCE_V1 {
                checked.failures.push(format!(
                    "predicateType is {:?}, not {SLSA_PROVENANCE_V1}",
                    statement.predicate_type
                ));
            }
            let hex = digest.trim_start_matches("sha256:");
            if !statement
                .subject
                .iter()
                .any(|s| s.digest.get("sha256").is_some_and(|d| d == hex))
            {
                let about: Vec<String> = statement
                    .subject
                    .iter()
                    .filter_map(|s| s.digest.get("sha256").map(|d| format!("sha256:{d}")))
                    .collect();
                checked.failures.push(format!(
                    "subject digest mismatch: the statement is about {}, the artifact is {digest}",
                    about.join(", ")
                ));
            }
            checked
                .failures
                .extend(policy_failures(&statement, &value, policy, now));
        }
    }
    checked.statement = Some(value);
    checked
}

fn policy_failures(
    statement: &Statement,
    value: &Value,
    policy: &Policy,
    now: Timestamp,
) -> Vec<String> {
    let mut failures = Vec::new();
    let p = &statement.predicate;
    if let Some(want) = &policy.builder_id
        && &p.run_details.builder.id != want
    {
        failures.push(format!(
            "builder id is {:?}, required {want:?}",
            p.run_details.builder.id
        ));
    }
    let digests_of = |prefix: &str| -> Vec<String> {
        p.build_definition
            .resolved_dependencies
            .iter()
            .filter(|d| d.name.as_deref().is_some_and(|n| n.starts_with(prefix)))
            .filter_map(|d| d.digest.get("sha256").map(|h| format!("sha256:{h}")))
            .collect()
    };
    let datasets = datasets::evidence(value);
    failures.extend(
        policy
            .datasets
            .iter()
            .filter_map(|want| datasets::unmet(want, &datasets, policy.allow_reported_datasets)),
    );
    let images = digests_of("image");
    for want in &policy.images {
        if !images.contains(want) {
            failures.push(format!(
                "required image {want} is not among the images ({})",
                list(&images)
            ));
        }
    }
    if let Some(max_age) = policy.max_age {
        let finished = p.run_details.metadata.finished_on.as_deref().or(p
            .run_details
            .metadata
            .started_on
            .as_deref());
        match finished.and_then(|t| t.parse::<Timestamp>().ok()) {
            None => failures.push("max age: the statement has no finishedOn time".into()),
            Some(t) if t > now => {
                failures.push(format!("max age: finishedOn {t} is in the future"))
            }
            Some(t) => {
                let age = now.duration_since(t);
                if age > max_age {
                    failures.push(format!(
                        "built {}s ago, older than the maximum age {}s",
                        age.as_secs(),
                        max_age.as_secs()
                    ));
                }
            }
        }
    }
    failures
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}
