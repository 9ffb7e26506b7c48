//! One run's lineage: what a signed provenance statement says went into which models, each fact
//! with who vouched for it. Derived from the statement alone (never from status a tenant could
//! touch), so an entry is as trustworthy as the statement it came from.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::provenance::statement::SLSA_PROVENANCE_V1;
use crate::verify::{Party, evidence};

/// Which kind of input a fact is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Kind {
    /// A `dataset:<name>` dependency.
    Dataset,
    /// A container image the workers ran (digest observed from the kubelet), or the image the spec
    /// pinned by digest.
    Image,
    /// The declared base model (a model digest).
    BaseModel,
    /// The declared source commit (`gitCommit`, not a sha256).
    Code,
}

impl Kind {
    pub fn word(self) -> &'static str {
        match self {
            Kind::Dataset => "dataset",
            Kind::Image => "image",
            Kind::BaseModel => "baseModel",
            Kind::Code => "code",
        }
    }
}

/// One input of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fact {
    pub kind: Kind,
    /// Dataset name, image reference as written, or empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// `sha256:<hex>`, or for [`Kind::Code`] the commit id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Who vouched for `digest`: `declared`, `observed`, `reported` (in that order).
    pub sources: Vec<String>,
}

/// A model a run produced (a statement subject).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ModelRef {
    pub repository: String,
    /// `sha256:<hex>`.
    pub digest: String,
}

impl ModelRef {
    /// `repository@sha256:<hex>`.
    pub fn reference(&self) -> String {
        format!("{}@{}", self.repository, self.digest)
    }
}

/// The run an entry is about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRef {
    /// Namespace of the run (`internalParameters.namespace`; empty for a local run).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Name of the TrainingRun when known (the record's label; statements do not carry it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// `runDetails.metadata.invocationId` (the run's UID in a cluster).
    pub invocation_id: String,
}

impl RunRef {
    /// `namespace/name`, or the invocation id when the name is unknown.
    pub fn display(&self) -> String {
        match (self.namespace.is_empty(), self.name.is_empty()) {
            (false, false) => format!("{}/{}", self.namespace, self.name),
            (_, false) => self.name.clone(),
            (false, true) => format!("{}/{}", self.namespace, self.invocation_id),
            (true, true) => self.invocation_id.clone(),
        }
    }
}

/// One run's lineage, as a signed provenance statement gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LineageEntry {
    pub run: RunRef,
    pub build_type: String,
    pub builder_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_on: Option<String>,
    /// The statement's subjects.
    pub models: Vec<ModelRef>,
    pub materials: Vec<Fact>,
    /// `sha256:` of the signed envelope this entry was derived from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envelope_digest: Option<String>,
}

/// Why a statement gives no lineage entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("the statement's predicateType is {0:?}, not {SLSA_PROVENANCE_V1}")]
    NotProvenance(String),
    #[error("the statement has no {0}")]
    Missing(&'static str),
}

fn sha256(descriptor: &Value) -> Option<String> {
    descriptor["digest"]["sha256"]
        .as_str()
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|h| format!("sha256:{}", h.to_ascii_lowercase()))
}

fn sources(descriptor: &Value) -> Vec<String> {
    descriptor["annotations"]["source"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(String::from)
        .collect()
}

fn text(value: &Value) -> Option<String> {
    value.as_str().map(String::from)
}

/// The digest of an image reference pinned by digest (`repo@sha256:<hex>`).
pub fn pinned_digest(reference: &str) -> Option<String> {
    let (_, digest) = reference.rsplit_once('@')?;
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| format!("sha256:{}", hex.to_ascii_lowercase()))
}

impl LineageEntry {
    /// The lineage of a verified SLSA provenance statement (`statement` as JSON). Facts that are
    /// malformed are left out: they name nothing a query could match.
    pub fn from_statement(statement: &Value) -> Result<LineageEntry, EntryError> {
        let predicate_type = statement["predicateType"].as_str().unwrap_or_default();
        if predicate_type != SLSA_PROVENANCE_V1 {
            return Err(EntryError::NotProvenance(predicate_type.to_string()));
        }
        let predicate = &statement["predicate"];
        let definition = &predicate["buildDefinition"];
        let details = &predicate["runDetails"];
        let invocation_id = text(&details["metadata"]["invocationId"])
            .ok_or(EntryError::Missing("runDetails.metadata.invocationId"))?;
        let models: Vec<ModelRef> = statement["subject"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| {
                Some(ModelRef {
                    repository: text(&s["name"])?,
                    digest: sha256(s)?,
                })
            })
            .collect();
        if models.is_empty() {
            return Err(EntryError::Missing("subject with a sha256 digest"));
        }

        let mut materials: Vec<Fact> = evidence(statement)
            .into_iter()
            .map(|d| {
                let sources = d.sources();
                let uri = definition["resolvedDependencies"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|dep| dep["name"].as_str() == Some(&format!("dataset:{}", d.name)))
                    .and_then(|dep| text(&dep["uri"]));
                Fact {
                    kind: Kind::Dataset,
                    name: d.name,
                    uri,
                    // A digest nobody vouched for (an old statement's unconfirmed `declared`)
                    // is kept as reported: a quarantine errs on the side of including.
                    sources: if sources.is_empty() {
                        vec![Party::Reported.word().to_string()]
                    } else {
                        sources.split('+').map(String::from).collect()
                    },
                    digest: d.digest,
                }
            })
            .collect();
        for dep in definition["resolvedDependencies"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let kind = match dep["name"].as_str() {
                Some("image") => Kind::Image,
                Some("baseModel") => Kind::BaseModel,
                Some("code") => Kind::Code,
                _ => continue,
            };
            let digest = match kind {
                Kind::Code => text(&dep["digest"]["gitCommit"]),
                _ => sha256(dep),
            };
            let name = match kind {
                Kind::Image => text(&dep["annotations"]["reference"]).unwrap_or_default(),
                _ => String::new(),
            };
            materials.push(Fact {
                kind,
                name,
                uri: text(&dep["uri"]),
                digest,
                sources: sources(dep),
            });
        }
        // The image as the spec wrote it, when pinned by digest: declared, even if no worker
        // ran (the observed images are the dependencies above).
        if let Some(image) = definition["externalParameters"]["image"].as_str()
            && let Some(digest) = pinned_digest(image)
        {
            match materials
                .iter_mut()
                .find(|f| f.kind == Kind::Image && f.digest.as_deref() == Some(&digest))
            {
                Some(observed) => {
                    if !observed.sources.iter().any(|s| s == "declared") {
                        observed.sources.insert(0, "declared".into());
                    }
                }
                None => materials.push(Fact {
                    kind: Kind::Image,
                    name: image.to_string(),
                    uri: None,
                    digest: Some(digest),
                    sources: vec!["declared".into()],
                }),
            }
        }
        Ok(LineageEntry {
            run: RunRef {
                namespace: text(&definition["internalParameters"]["namespace"]).unwrap_or_default(),
                name: String::new(),
                invocation_id,
            },
            build_type: text(&definition["buildType"]).unwrap_or_default(),
            builder_id: text(&details["builder"]["id"]).unwrap_or_default(),
            finished_on: text(&details["metadata"]["finishedOn"]),
            models,
            materials,
            envelope_digest: None,
        })
    }

    /// The facts of `kind`.
    pub fn facts(&self, kind: Kind) -> impl Iterator<Item = &Fact> {
        self.materials.iter().filter(move |f| f.kind == kind)
    }
}
