//! Revocation statements among an artifact's attestations (docs/lineage.md, "Predicate"): one
//! that verifies with the key and is about the artifact's digest counts; they are folded by
//! revocation uid ([`Revocations`]), and any revocation still in force fails the verdict with its
//! name, reason, advisory and path. One signed by another key, or about another digest, is
//! reported as not verifying and otherwise ignored: nobody without the key can revoke a model,
//! nor withdraw a revocation.

use serde::Serialize;
use serde_json::Value;

use super::Checked;
use crate::provenance::revocation::{RevocationPredicate, RevocationStatement, Revocations};

/// What an attestation is, once its signature verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum AttestationKind {
    /// Anything but a revocation: checked as SLSA provenance.
    Provenance,
    /// A revocation or reinstatement statement (`https://provenant.dev/revocation/v1`).
    Revocation,
}

/// A revocation in force against the artifact.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Revoked {
    /// One line for a person: name, reason, advisory, path ([`describe`](crate::provenance::revocation::describe)).
    pub description: String,
    #[serde(flatten)]
    pub predicate: RevocationPredicate,
}

/// The checks of a verified payload that is a revocation statement, or None when it is not
/// one. A revocation statement is never held to the SLSA checks: it is judged as what it is.
pub(super) fn check(payload: &[u8], digest: &str) -> Option<Vec<String>> {
    let statement = match RevocationStatement::parse(payload)? {
        Ok(s) => s,
        Err(e) => return Some(vec![format!("revocation statement does not parse: {e}")]),
    };
    if statement.is_about(digest) {
        return Some(Vec::new());
    }
    let about: Vec<String> = statement
        .subject
        .iter()
        .filter_map(|s| s.digest.get("sha256").map(|d| format!("sha256:{d}")))
        .collect();
    Some(vec![format!(
        "revocation statement about another artifact: it names {}, the artifact is {digest}",
        if about.is_empty() {
            "no sha256 digest".to_string()
        } else {
            about.join(", ")
        }
    )])
}

/// The revocations in force among the verified revocation statements, and how many
/// revocations were withdrawn (reinstated).
pub(super) fn in_force(attestations: &[Checked]) -> (Vec<Revoked>, usize) {
    let mut revocations = Revocations::default();
    for c in attestations {
        if c.kind != Some(AttestationKind::Revocation) || !c.verified() {
            continue;
        }
        // Parsed once already in `check`; a statement that got this far parses.
        if let Some(statement) = c.statement.as_ref().and_then(parse) {
            revocations.add(statement.predicate);
        }
    }
    let revoked = revocations
        .active()
        .into_iter()
        .map(|p| Revoked {
            description: crate::provenance::revocation::describe(p),
            predicate: p.clone(),
        })
        .collect();
    (revoked, revocations.reinstated())
}

fn parse(value: &Value) -> Option<RevocationStatement> {
    serde_json::from_value(value.clone()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lineage::{Fact, Hit, Kind, ModelRef, RunRef, Step};
    use crate::provenance::revocation::{Material, MaterialType, RevocationRef, State};

    const MODEL: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const DATASET: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn statement(uid: &str, state: State, about: &str) -> RevocationStatement {
        let model = ModelRef {
            repository: "registry.example.com/models/m".into(),
            digest: about.into(),
        };
        let hit = Hit {
            model: model.clone(),
            path: vec![Step {
                run: RunRef {
                    namespace: "team".into(),
                    name: "train".into(),
                    invocation_id: "uid-run".into(),
                },
                via: Fact {
                    kind: Kind::Dataset,
                    name: "corpus".into(),
                    uri: None,
                    digest: Some(DATASET.into()),
                    sources: vec!["declared".into()],
                },
                model,
            }],
        };
        RevocationStatement::new(
            &hit,
            state,
            RevocationRef {
                name: format!("bad-{uid}"),
                uid: uid.into(),
                reason: "poisoned".into(),
                advisory: Some("https://example.com/adv/1".into()),
            },
            Material {
                type_: MaterialType::Dataset,
                digest: DATASET.into(),
            },
            "https://provenant.dev/controller/v1",
            "2026-11-20T10:00:00Z",
        )
    }

    fn checked(s: &RevocationStatement) -> Checked {
        let bytes = s.to_bytes().unwrap();
        Checked {
            found_at: "test".into(),
            envelope_digest: "sha256:00".into(),
            failures: check(&bytes, MODEL).unwrap(),
            kind: Some(AttestationKind::Revocation),
            statement: Some(serde_json::from_slice(&bytes).unwrap()),
        }
    }

    #[test]
    fn a_reinstatement_withdraws_only_its_own_revocation() {
        let a = checked(&statement("a", State::Revoked, MODEL));
        let (revoked, reinstated) = in_force(std::slice::from_ref(&a));
        assert_eq!((revoked.len(), reinstated), (1, 0));
        assert!(
            revoked[0]
                .description
                .contains("revoked by bad-a: poisoned (https://example.com/adv/1)"),
            "{}",
            revoked[0].description
        );
        let a_back = checked(&statement("a", State::Reinstated, MODEL));
        assert_eq!(in_force(&[a.clone(), a_back.clone()]).0.len(), 0);
        let b = checked(&statement("b", State::Revoked, MODEL));
        let (revoked, reinstated) = in_force(&[a, a_back, b]);
        assert_eq!(reinstated, 1);
        assert_eq!(revoked.len(), 1);
        assert_eq!(revoked[0].predicate.revocation.uid, "b");
    }

    #[test]
    fn a_statement_about_another_digest_fails_and_does_not_count() {
        let other = "sha256:3333333333333333333333333333333333333333333333333333333333333333";
        let c = checked(&statement("a", State::Revoked, other));
        assert_eq!(
            c.failures,
            [format!(
                "revocation statement about another artifact: it names {other}, the artifact is {MODEL}"
            )]
        );
        assert!(in_force(&[c]).0.is_empty());
    }

    #[test]
    fn a_malformed_revocation_is_a_failure_and_other_statements_are_not_revocations() {
        let bad = br#"{"predicateType":"https://provenant.dev/revocation/v1","predicate":{}}"#;
        let failures = check(bad, MODEL).unwrap();
        assert!(failures[0].starts_with("revocation statement does not parse"));
        let slsa = br#"{"predicateType":"https://slsa.dev/provenance/v1"}"#;
        assert!(check(slsa, MODEL).is_none());
    }
}
