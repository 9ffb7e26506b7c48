//! `provenant verify --policy FILE.rego`: a Rego policy over each attestation whose signature
//! verified, evaluated by regorus (OPA's Rego v1). The convention is conftest's: the policy is in
//! `package provenant` and its `deny` rules form a set of messages; each message is a reason the
//! attestation is refused (docs/verify.md, "Policies in Rego").
//!
//! Only a statement whose DSSE signature verified with `--key` ever reaches a policy (an
//! attestation without one has no `statement` in its [`Checked`]): a policy never reads unverified
//! data. What a policy reads is the input document built by [`input`].
//!
//! A policy that does not parse, has no `deny` rule in `package provenant`, or fails while it is
//! evaluated (a builtin error such as a division by zero, conflicting values of a complete rule)
//! is an error, not a refusal: the user's policy is broken, and a broken gate must neither admit
//! (a `deny` rule that errors would otherwise just not fire) nor pass for a verdict.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::{Checked, Verdict};
use crate::provenance::statement::{SLSA_PROVENANCE_V1, STATEMENT_TYPE};

/// The package a policy's rules live in.
pub const PACKAGE: &str = "provenant";
/// The rule whose messages refuse an attestation.
const DENY_RULE: &str = "data.provenant.deny";
/// How long one policy may take over one statement. Rego always terminates, but a comprehension
/// over a huge range can take hours; `verify` in an init container must not hang a pod's start.
pub const TIME_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Why a policy cannot be used. Each names the file; a parse or evaluation error also carries
/// regorus's `--> FILE:LINE:COL` pointer.
#[derive(Debug, thiserror::Error)]
pub enum RegoError {
    #[error("cannot read policy {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("policy {path} does not parse:{message}")]
    Parse { path: PathBuf, message: String },
    #[error(
        "policy {path} is in package {found}: a verify policy must be in package {PACKAGE} (its `deny` rule is what refuses)"
    )]
    Package { path: PathBuf, found: String },
    #[error(
        "policy {path} has no `deny` rule in package {PACKAGE}: write `deny contains msg if {{ ... }}` (a policy without one would admit everything)"
    )]
    NoDeny { path: PathBuf },
    #[error("cannot read policy data {path}:{message}")]
    Data { path: PathBuf, message: String },
    #[error("policy {path} failed while evaluating the statement {envelope}:{message}")]
    Eval {
        path: PathBuf,
        envelope: String,
        message: String,
    },
    #[error(
        "policy {path}: `deny` must be a set of messages (`deny contains msg if ...`), it is {found}"
    )]
    Decision { path: PathBuf, found: String },
}

/// One `--policy` file, parsed, with the `--policy-data` documents loaded as `data`.
#[derive(Clone)]
pub struct RegoPolicy {
    path: PathBuf,
    engine: regorus::Engine,
}

impl fmt::Debug for RegoPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegoPolicy")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RegoPolicy {
    /// Reads and parses the policy at `path`; `data` documents (each a JSON object, from
    /// `--policy-data`) are merged into its `data`.
    pub fn load(path: &Path, data: &[(PathBuf, Value)]) -> Result<Self, RegoError> {
        let text = std::fs::read_to_string(path).map_err(|source| RegoError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_source(path, text, data)
    }

    /// As [`RegoPolicy::load`], from the policy's text.
    pub fn from_source(
        path: &Path,
        text: String,
        data: &[(PathBuf, Value)],
    ) -> Result<Self, RegoError> {
        let name = path.display().to_string();
        let parse = |message: String| RegoError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let mut engine = regorus::Engine::new();
        // A builtin that fails (a division by zero, a bad regex) is an error, not an undefined
        // value: a `deny` rule whose body errors must not silently stop refusing (OPA's
        // `--strict-builtin-errors`).
        engine.set_strict_builtin_errors(true);
        engine.set_execution_timer_config(regorus::utils::limits::ExecutionTimerConfig {
            limit: TIME_LIMIT,
            check_interval: std::num::NonZeroU32::MIN,
        });
        let package = engine
            .add_policy(name.clone(), text)
            .map_err(|e| parse(detail(&e)))?;
        if package != format!("data.{PACKAGE}") {
            return Err(RegoError::Package {
                path: path.to_path_buf(),
                found: package.trim_start_matches("data.").to_string(),
            });
        }
        if !engine
            .has_declared_rule_rooted_at(&name, "deny")
            .map_err(|e| parse(detail(&e)))?
        {
            return Err(RegoError::NoDeny {
                path: path.to_path_buf(),
            });
        }
        for (file, document) in data {
            engine
                .add_data(regorus::Value::from(document.clone()))
                .map_err(|e| RegoError::Data {
                    path: file.clone(),
                    message: detail(&e),
                })?;
        }
        Ok(RegoPolicy {
            path: path.to_path_buf(),
            engine,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The same policy with another time limit per evaluation (tests).
    pub fn with_time_limit(mut self, limit: std::time::Duration) -> Self {
        self.engine
            .set_execution_timer_config(regorus::utils::limits::ExecutionTimerConfig {
                limit,
                check_interval: std::num::NonZeroU32::MIN,
            });
        self
    }

    /// The messages of `deny` for `input`, sorted (a set has no other order).
    pub fn deny(&self, input: &Value, envelope: &str) -> Result<Vec<String>, RegoError> {
        let mut engine = self.engine.clone();
        engine.set_input(regorus::Value::from(input.clone()));
        let eval = |message: String| RegoError::Eval {
            path: self.path.clone(),
            envelope: envelope.to_string(),
            message,
        };
        let decision = engine
            .eval_rule(DENY_RULE.to_string())
            .map_err(|e| eval(detail(&e)))?;
        let decision: Value = match decision {
            // No `deny` body held: nothing refuses.
            regorus::Value::Undefined => return Ok(Vec::new()),
            v => serde_json::from_str(&v.to_json_str().map_err(|e| eval(detail(&e)))?)
                .map_err(|e| eval(format!(" {e}")))?,
        };
        let Value::Array(messages) = decision else {
            return Err(RegoError::Decision {
                path: self.path.clone(),
                found: decision.to_string(),
            });
        };
        // A message is a string, or (as conftest allows) an object with a `msg` string; anything
        // else is kept as its JSON text: a denial is never dropped for its shape.
        Ok(messages
            .into_iter()
            .map(|m| match m {
                Value::String(s) => s,
                Value::Object(ref o) => match o.get("msg") {
                    Some(Value::String(s)) => s.clone(),
                    _ => m.to_string(),
                },
                other => other.to_string(),
            })
            .collect())
    }
}

/// regorus's message, set after a `:`: its `--> FILE:LINE:COL` pointer and source excerpt start
/// on a line of their own; a one-line message follows a space.
fn detail(e: &anyhow::Error) -> String {
    let message = format!("{e:#}");
    if message.starts_with('\n') {
        message
    } else {
        format!(" {message}")
    }
}

/// Every `--policy` file, each with every `--policy-data` document as its `data`.
pub fn load_all(policies: &[PathBuf], data: &[PathBuf]) -> Result<Vec<RegoPolicy>, RegoError> {
    let data = data
        .iter()
        .map(|p| load_data(p))
        .collect::<Result<Vec<_>, _>>()?;
    policies
        .iter()
        .map(|p| RegoPolicy::load(p, &data))
        .collect()
}

/// Reads a `--policy-data` file: a JSON object (its keys become top-level keys of `data`).
pub fn load_data(path: &Path) -> Result<(PathBuf, Value), RegoError> {
    let bad = |message: String| RegoError::Data {
        path: path.to_path_buf(),
        message: format!(" {message}"),
    };
    let text = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let value: Value = serde_json::from_slice(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    if !value.is_object() {
        return Err(bad(
            "must be a JSON object (its keys become keys of `data`)".into(),
        ));
    }
    Ok((path.to_path_buf(), value))
}

/// What the verifier knows about the artifact beyond the statements: given to every policy as
/// `input.artifact` and `input.annotations`.
#[derive(Debug, Clone, Default)]
pub struct ArtifactFacts {
    /// The manifest's media type.
    pub media_type: Option<String>,
    /// The manifest's `artifactType`.
    pub artifact_type: Option<String>,
    /// The manifest's `annotations` (`{}` when it has none).
    pub annotations: serde_json::Map<String, Value>,
}

impl ArtifactFacts {
    /// The facts of manifest `bytes` (already checked against the verified digest).
    pub fn from_manifest(bytes: &[u8], media_type: Option<String>) -> Self {
        let manifest: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
        ArtifactFacts {
            media_type: media_type.or_else(|| manifest["mediaType"].as_str().map(String::from)),
            artifact_type: manifest["artifactType"].as_str().map(String::from),
            annotations: manifest["annotations"]
                .as_object()
                .cloned()
                .unwrap_or_default(),
        }
    }
}

/// The input document of one attestation (docs/verify.md, "The input document").
pub fn input(
    verdict: &Verdict,
    checked: &Checked,
    statement: &Value,
    facts: &ArtifactFacts,
) -> Value {
    json!({
        "statement": statement,
        "predicate": statement.get("predicate").cloned().unwrap_or(Value::Null),
        "artifact": {
            "name": verdict.artifact,
            "digest": verdict.digest,
            "mediaType": facts.media_type,
            "artifactType": facts.artifact_type,
            "annotations": facts.annotations,
        },
        "annotations": facts.annotations,
        "attestation": {
            "foundAt": checked.found_at,
            "envelopeDigest": checked.envelope_digest,
        },
    })
}

/// An in-toto Statement v1 with a SLSA Provenance v1 predicate.
fn is_provenance(statement: &Value) -> bool {
    statement["_type"] == STATEMENT_TYPE && statement["predicateType"] == SLSA_PROVENANCE_V1
}

/// Runs every policy over every provenance statement whose signature verified; each `deny` message
/// becomes a failure `policy FILE: MESSAGE` of that attestation. The verdict is then settled
/// again (an attestation refused by a policy no longer verifies the artifact).
pub fn apply(
    mut verdict: Verdict,
    policies: &[RegoPolicy],
    facts: &ArtifactFacts,
) -> Result<Verdict, RegoError> {
    if policies.is_empty() {
        return Ok(verdict);
    }
    let mut refusals = Vec::with_capacity(verdict.attestations.len());
    for checked in &verdict.attestations {
        let mut reasons = Vec::new();
        // `statement` is set only once the signature verified. A policy is written against SLSA
        // provenance: another statement signed by the same key (the model's OMS signature, say)
        // is not provenance, and is refused for its predicate type already.
        if let Some(statement) = checked.statement.as_ref().filter(|s| is_provenance(s)) {
            let input = input(&verdict, checked, statement, facts);
            for policy in policies {
                for message in policy.deny(&input, &checked.envelope_digest)? {
                    reasons.push(format!("policy {}: {message}", policy.path.display()));
                }
            }
        }
        refusals.push(reasons);
    }
    for (checked, reasons) in verdict.attestations.iter_mut().zip(refusals) {
        checked.failures.extend(reasons);
    }
    Ok(verdict.settled())
}

#[cfg(test)]
mod tests;
