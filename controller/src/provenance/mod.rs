//! Attest, part one: the SLSA v1 provenance statement of a finished run, built from its spec (what
//! was asked) and its recorded status (what was observed and reported). Pure: the same run always
//! gives the same statement bytes. docs/provenance.md documents every field.
//!
//! The builders are split by what they fill, as in the mapping table of DESIGN.md:
//! [`external_parameters`], [`internal_parameters`], [`resolved_dependencies`], [`byproducts`],
//! [`subjects`]; the objects whose content is provenant's own are built in `fields.rs`.

mod fields;
pub mod model_signing;
pub mod revocation;
pub mod statement;

use std::collections::BTreeMap;

use serde_json::Value;

use crate::api::{TrainingRun, TrainingRunSpec, TrainingRunStatus};
use crate::execute::placement::Placement;
use statement::{
    BuildDefinition, BuildMetadata, Builder, Object, Provenance, ResourceDescriptor, RunDetails,
    SLSA_PROVENANCE_V1, STATEMENT_TYPE, Statement,
};

/// buildType of runs executed by the controller (a stable contract, docs/provenance.md).
pub const BUILD_TYPE: &str = "https://provenant.dev/TrainingRun/v1";
/// Default `runDetails.builder.id` (a configuration default, defined with the configuration).
pub use crate::config::DEFAULT_BUILDER_ID;
/// buildType of runs executed on a host by `provenant attest` (docs/provenance.md, "local").
pub const LOCAL_BUILD_TYPE: &str = "https://provenant.dev/TrainingRun/local/v1";
/// Default `runDetails.builder.id` of `provenant attest`.
pub const DEFAULT_LOCAL_BUILDER_ID: &str = "https://provenant.dev/attest/v1";

/// How `provenant attest` ran a TrainingRun on a host: what the local statement records instead
/// of the cluster's namespace and scheduling.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalInvocation {
    /// Host facts (hostname, os, arch, cpus, ...), as observed.
    pub host: Value,
    /// Directory the command ran in.
    pub working_directory: String,
    /// The argv actually executed.
    pub command: Vec<String>,
    /// The code as observed in the working directory: (uri, commit, dirty).
    pub code: Option<(String, String, bool)>,
}

/// Who built it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuilderIdentity {
    pub id: String,
    pub version: String,
}

impl BuilderIdentity {
    /// The controller: the configured id (with the cluster appended when configured) and this
    /// binary's version.
    pub fn controller(builder_id: &str, cluster: Option<&str>) -> Self {
        let id = match cluster {
            Some(cluster) if !cluster.is_empty() => {
                format!("{}/{cluster}", builder_id.trim_end_matches('/'))
            }
            _ => builder_id.to_string(),
        };
        BuilderIdentity {
            id,
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

/// The run cannot be attested.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProvenanceError {
    #[error(
        "the run reported no output model: nothing to attest (the workload must report outputs[], see docs/workload-report.md)"
    )]
    NoOutputs,
    #[error("the run has not succeeded")]
    NotSucceeded,
    #[error("the run has no {0}")]
    Missing(&'static str),
    #[error("cannot write {field} of the statement as JSON: {reason}")]
    Unserializable { field: &'static str, reason: String },
}

impl ProvenanceError {
    /// Condition reason (CamelCase, stable).
    pub fn reason(&self) -> &'static str {
        match self {
            ProvenanceError::NoOutputs => "NoOutputs",
            ProvenanceError::NotSucceeded => "NotSucceeded",
            ProvenanceError::Missing(_) => "InvalidRun",
            ProvenanceError::Unserializable { .. } => "StatementUnserializable",
        }
    }
}

/// `runDetails`: who built it, which run, when, and the per-worker byproducts.
fn run_details(
    builder: &BuilderIdentity,
    invocation_id: String,
    status: &TrainingRunStatus,
    byproducts: Vec<ResourceDescriptor>,
) -> RunDetails {
    RunDetails {
        builder: Builder {
            id: builder.id.clone(),
            version: BTreeMap::from([("provenant".to_string(), builder.version.clone())]),
        },
        metadata: BuildMetadata {
            invocation_id,
            started_on: status.start_time.as_ref().map(|t| rfc3339(&t.0)),
            finished_on: status.completion_time.as_ref().map(|t| rfc3339(&t.0)),
        },
        byproducts,
    }
}

/// What every statement needs from a run: it succeeded, it has outputs, it has a UID.
fn attestable(
    run: &TrainingRun,
) -> Result<(&TrainingRunStatus, Vec<ResourceDescriptor>, String), ProvenanceError> {
    let status = run.status.as_ref().ok_or(ProvenanceError::NotSucceeded)?;
    if status.phase != Some(crate::api::Phase::Succeeded) {
        return Err(ProvenanceError::NotSucceeded);
    }
    let subject = subjects(status);
    if subject.is_empty() {
        return Err(ProvenanceError::NoOutputs);
    }
    let uid = run
        .metadata
        .uid
        .clone()
        .ok_or(ProvenanceError::Missing("uid"))?;
    Ok((status, subject, uid))
}

/// The statement for a succeeded run, as the controller ran it with `placement`.
pub fn statement_for_run(
    run: &TrainingRun,
    placement: &Placement,
    builder: &BuilderIdentity,
) -> Result<Statement, ProvenanceError> {
    let (status, subject, uid) = attestable(run)?;
    let namespace = run
        .metadata
        .namespace
        .clone()
        .ok_or(ProvenanceError::Missing("namespace"))?;
    let name = run
        .metadata
        .name
        .clone()
        .ok_or(ProvenanceError::Missing("name"))?;
    let group = crate::execute::queueing::pod_group_name(&name, &uid);
    let group = run.spec.queue_name.as_ref().map(|_| group.as_str());
    Ok(Statement {
        type_: STATEMENT_TYPE.into(),
        subject,
        predicate_type: SLSA_PROVENANCE_V1.into(),
        predicate: Provenance {
            build_definition: BuildDefinition {
                build_type: BUILD_TYPE.into(),
                external_parameters: external_parameters(&run.spec)?,
                internal_parameters: internal_parameters(
                    &run.spec, &name, status, &namespace, placement, group,
                )?,
                resolved_dependencies: resolved_dependencies(&run.spec, status)?,
            },
            run_details: run_details(
                builder,
                uid,
                status,
                byproducts(status, |pod| format!("k8s://{namespace}/pods/{pod}"))?,
            ),
        },
    })
}

/// The statement of a run executed on a host by `provenant attest`: the same mapping, with the
/// host in place of the cluster and the code revision observed from the working directory.
pub fn statement_for_local_run(
    run: &TrainingRun,
    local: &LocalInvocation,
    builder: &BuilderIdentity,
) -> Result<Statement, ProvenanceError> {
    let (status, subject, uid) = attestable(run)?;
    let internal = object("internalParameters", fields::local_parameters(local))?;
    let mut deps = resolved_dependencies(&run.spec, status)?;
    if let Some((uri, commit, dirty)) = &local.code {
        // Observed beats declared here: the commit the working tree is at (attest refuses to run
        // when a declared revision disagrees).
        deps.retain(|d| d.name.as_deref() != Some("code"));
        let declared = run.spec.code.as_ref().and_then(|c| c.revision.as_ref()) == Some(commit);
        let source: &[&str] = if declared {
            &["declared", "observed"]
        } else {
            &["observed"]
        };
        let uri = if uri.starts_with("git+") {
            uri.clone()
        } else {
            format!("git+{uri}")
        };
        deps.push(ResourceDescriptor {
            name: Some("code".into()),
            uri: Some(uri),
            digest: BTreeMap::from([("gitCommit".to_string(), commit.clone())]),
            annotations: object(
                "resolvedDependencies",
                fields::dependency_annotations(source, None, Some(*dirty)),
            )?,
            ..Default::default()
        });
    }
    let host = local
        .host
        .get("hostname")
        .and_then(Value::as_str)
        .unwrap_or("localhost")
        .to_string();
    Ok(Statement {
        type_: STATEMENT_TYPE.into(),
        subject,
        predicate_type: SLSA_PROVENANCE_V1.into(),
        predicate: Provenance {
            build_definition: BuildDefinition {
                build_type: LOCAL_BUILD_TYPE.into(),
                external_parameters: external_parameters(&run.spec)?,
                internal_parameters: internal,
                resolved_dependencies: deps,
            },
            run_details: run_details(
                builder,
                uid,
                status,
                byproducts(status, |worker| format!("local://{host}/{worker}"))?,
            ),
        },
    })
}

fn rfc3339(t: &jiff::Timestamp) -> String {
    // Whole seconds, UTC, `Z`: what the API server stores and what every verifier parses.
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A builder's object, or the error that kept it from being written.
fn object(
    field: &'static str,
    built: serde_json::Result<Object>,
) -> Result<Object, ProvenanceError> {
    built.map_err(|e| ProvenanceError::Unserializable {
        field,
        reason: e.to_string(),
    })
}

/// `sha256:<hex>` → `{"sha256": "<hex>"}`.
pub fn digest_map(digest: &str) -> BTreeMap<String, String> {
    match digest.split_once(':') {
        Some((algorithm, hex)) => BTreeMap::from([(algorithm.to_string(), hex.to_string())]),
        None => BTreeMap::new(),
    }
}

/// One subject per accepted output: name = repository, digest = manifest digest.
pub fn subjects(status: &TrainingRunStatus) -> Vec<ResourceDescriptor> {
    status
        .outputs
        .iter()
        .map(|o| ResourceDescriptor {
            name: Some(o.repository.clone()),
            digest: digest_map(&o.digest),
            ..Default::default()
        })
        .collect()
}

/// The run as submitted: everything the user controls.
pub fn external_parameters(spec: &TrainingRunSpec) -> Result<Object, ProvenanceError> {
    object("externalParameters", fields::external_parameters(spec))
}

/// What the controller decided around the run: where and as whom it ran, and (with a queue) the
/// Kueue pod group `pod_group` of its workers.
pub fn internal_parameters(
    spec: &TrainingRunSpec,
    name: &str,
    status: &TrainingRunStatus,
    namespace: &str,
    placement: &Placement,
    pod_group: Option<&str>,
) -> Result<Object, ProvenanceError> {
    object(
        "internalParameters",
        fields::cluster_parameters(spec, name, status, namespace, placement, pod_group),
    )
}

/// The annotations of a dependency: `source`, and the image's `reference`.
fn annotations(source: &[&str], reference: Option<&str>) -> Result<Object, ProvenanceError> {
    object(
        "resolvedDependencies",
        fields::dependency_annotations(source, reference, None),
    )
}

/// Container images (observed), datasets (each digest with who gave it: declared, observed,
/// reported), base model and code (declared).
pub fn resolved_dependencies(
    spec: &TrainingRunSpec,
    status: &TrainingRunStatus,
) -> Result<Vec<ResourceDescriptor>, ProvenanceError> {
    let mut deps = Vec::new();
    for image in status.materials.iter().flat_map(|m| &m.images) {
        let repository = image.image.split('@').next().unwrap_or(&image.image);
        deps.push(ResourceDescriptor {
            name: Some("image".into()),
            uri: Some(format!("oci://{repository}")),
            digest: digest_map(&image.digest),
            annotations: annotations(&["observed"], Some(&image.image))?,
            ..Default::default()
        });
    }
    for d in status.materials.iter().flat_map(|m| &m.datasets) {
        let declared = spec.datasets.iter().find(|s| s.name == d.name);
        deps.push(ResourceDescriptor {
            name: Some(format!("dataset:{}", d.name)),
            uri: d.uri.clone(),
            digest: d.digest.as_deref().map(digest_map).unwrap_or_default(),
            annotations: object(
                "resolvedDependencies",
                fields::dataset_annotations(d, declared),
            )?,
            ..Default::default()
        });
    }
    if let Some(base) = &spec.base_model {
        deps.push(ResourceDescriptor {
            name: Some("baseModel".into()),
            uri: Some(base.uri.clone()),
            digest: base.digest.as_deref().map(digest_map).unwrap_or_default(),
            annotations: annotations(&["declared"], None)?,
            ..Default::default()
        });
    }
    if let Some(code) = &spec.code {
        let uri = if code.uri.starts_with("git+") {
            code.uri.clone()
        } else {
            format!("git+{}", code.uri)
        };
        deps.push(ResourceDescriptor {
            name: Some("code".into()),
            uri: Some(uri),
            digest: code
                .revision
                .as_ref()
                .map(|r| BTreeMap::from([("gitCommit".to_string(), r.clone())]))
                .unwrap_or_default(),
            annotations: annotations(&["declared"], None)?,
            ..Default::default()
        });
    }
    Ok(deps)
}

/// One byproduct per worker: what the controller observed (node, accelerator facts, exit code,
/// timings, images) apart from what the workload reported (metrics), and the digest of the
/// worker's termination message.
pub fn byproducts(
    status: &TrainingRunStatus,
    uri_of: impl Fn(&str) -> String,
) -> Result<Vec<ResourceDescriptor>, ProvenanceError> {
    status
        .workers
        .iter()
        .map(|w| {
            Ok(ResourceDescriptor {
                name: Some(format!("worker/{}", w.pod_name)),
                // The pod, as a reference (every descriptor needs a uri or a digest).
                uri: Some(uri_of(&w.pod_name)),
                digest: w
                    .report_digest
                    .as_deref()
                    .map(digest_map)
                    .unwrap_or_default(),
                media_type: w
                    .report_digest
                    .as_ref()
                    .map(|_| "application/json".to_string()),
                annotations: object("byproducts", fields::worker_annotations(w))?,
            })
        })
        .collect()
}
