//! The revocation attestation (docs/lineage.md, "Predicate"): an in-toto Statement v1 about one
//! model, with provenant's predicate `https://provenant.dev/revocation/v1`, saying that an input
//! the model depends on was revoked (or, after a false alarm, reinstated), which input, through
//! which runs, and why. Signed with the controller's key like the provenance, and attached to the
//! model beside it, so that registry-side tools (cosign, policy-controller, Kyverno) see it.
//!
//! A model is revoked while, for some revocation `uid`, a verified statement with state
//! `revoked` exists and none with state `reinstated` ([`Revocations::active`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::statement::{ResourceDescriptor, STATEMENT_TYPE};
use crate::lineage::{Hit, ModelRef, Step};

/// `predicateType` of a revocation attestation.
pub const REVOCATION_PREDICATE_TYPE: &str = "https://provenant.dev/revocation/v1";

/// Whether the statement revokes or reinstates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum State {
    Revoked,
    /// The revocation was withdrawn (its MaterialRevocation deleted: a false alarm).
    Reinstated,
}

/// The kind of the revoked material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MaterialType {
    Dataset,
    Image,
    /// A model, also as the base model of others.
    Model,
}

impl MaterialType {
    pub fn word(self) -> &'static str {
        match self {
            MaterialType::Dataset => "dataset",
            MaterialType::Image => "image",
            MaterialType::Model => "model",
        }
    }
}

/// The revoked material.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Material {
    #[serde(rename = "type")]
    pub type_: MaterialType,
    /// `sha256:<hex>`.
    pub digest: String,
}

/// The revocation as an API object gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevocationRef {
    /// `metadata.name` of the MaterialRevocation (or the name given to `provenant revoke`).
    pub name: String,
    /// Its `metadata.uid`: what ties a reinstatement to its revocation.
    pub uid: String,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advisory: Option<String>,
}

/// The predicate of a revocation attestation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevocationPredicate {
    pub state: State,
    pub revocation: RevocationRef,
    pub material: Material,
    /// From the material to the subject, one step per run (empty: the subject is the material).
    #[serde(default)]
    pub path: Vec<Step>,
    /// `builder.id` of who signed (the controller's builder id, or `provenant revoke`'s).
    pub issuer: String,
    /// When the revocation was created (`revoked`) or deleted (`reinstated`), RFC 3339 UTC.
    pub time: String,
}

/// An in-toto statement with a [`RevocationPredicate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevocationStatement {
    #[serde(rename = "_type")]
    pub type_: String,
    pub subject: Vec<ResourceDescriptor>,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    pub predicate: RevocationPredicate,
}

impl RevocationStatement {
    /// The statement about `hit.model`.
    pub fn new(
        hit: &Hit,
        state: State,
        revocation: RevocationRef,
        material: Material,
        issuer: &str,
        time: &str,
    ) -> Self {
        RevocationStatement {
            type_: STATEMENT_TYPE.to_string(),
            subject: vec![subject(&hit.model)],
            predicate_type: REVOCATION_PREDICATE_TYPE.to_string(),
            predicate: RevocationPredicate {
                state,
                revocation,
                material,
                path: hit.path.clone(),
                issuer: issuer.to_string(),
                time: time.to_string(),
            },
        }
    }

    /// Compact JSON, fields in declaration order: one input, one byte string.
    pub fn to_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// Whether the statement is about the manifest `digest` (`sha256:<hex>`).
    pub fn is_about(&self, digest: &str) -> bool {
        let hex = digest.trim_start_matches("sha256:");
        self.subject
            .iter()
            .any(|s| s.digest.get("sha256").is_some_and(|d| d == hex))
    }

    /// Read a verified payload; None when it is not a revocation statement.
    pub fn parse(payload: &[u8]) -> Option<Result<Self, serde_json::Error>> {
        #[derive(Deserialize)]
        struct Head {
            #[serde(rename = "predicateType")]
            predicate_type: String,
        }
        let head: Head = serde_json::from_slice(payload).ok()?;
        (head.predicate_type == REVOCATION_PREDICATE_TYPE).then(|| serde_json::from_slice(payload))
    }
}

fn subject(model: &ModelRef) -> ResourceDescriptor {
    ResourceDescriptor {
        name: Some(model.repository.clone()),
        digest: BTreeMap::from([(
            "sha256".to_string(),
            model.digest.trim_start_matches("sha256:").to_string(),
        )]),
        ..Default::default()
    }
}

/// The revocation statements verified for one model, folded by revocation: the ones still in
/// force are those revoked and not reinstated.
#[derive(Debug, Default)]
pub struct Revocations {
    by_uid: BTreeMap<String, (Option<RevocationPredicate>, bool)>,
}

impl Revocations {
    pub fn add(&mut self, predicate: RevocationPredicate) {
        let slot = self
            .by_uid
            .entry(predicate.revocation.uid.clone())
            .or_default();
        match predicate.state {
            State::Revoked => slot.0 = Some(predicate),
            State::Reinstated => slot.1 = true,
        }
    }

    /// The revocations in force, by uid.
    pub fn active(&self) -> Vec<&RevocationPredicate> {
        self.by_uid
            .values()
            .filter(|(_, reinstated)| !reinstated)
            .filter_map(|(revoked, _)| revoked.as_ref())
            .collect()
    }

    /// How many revocations were reinstated.
    pub fn reinstated(&self) -> usize {
        self.by_uid.values().filter(|(_, r)| *r).count()
    }
}

/// One line for a person: the revocation, its reason, and the path from the material.
pub fn describe(p: &RevocationPredicate) -> String {
    let mut path = vec![format!("{} {}", p.material.type_.word(), p.material.digest)];
    for step in &p.path {
        path.push(format!(
            "run {} (its {}, {}) → {}",
            step.run.display(),
            step.via.kind.word(),
            step.via.sources.join("+"),
            step.model.reference()
        ));
    }
    let advisory = p
        .revocation
        .advisory
        .as_deref()
        .map(|a| format!(" ({a})"))
        .unwrap_or_default();
    format!(
        "revoked by {}: {}{advisory}; path: {}",
        p.revocation.name,
        p.revocation.reason,
        path.join(" → ")
    )
}
