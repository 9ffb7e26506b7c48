//! The JSON objects whose content is provenant's own, one builder per field of the mapping table
//! of DESIGN.md: [`external_parameters`], [`cluster_parameters`] and [`local_parameters`] (the
//! `internalParameters` of a run in a cluster and on a host), [`dataset_annotations`] (who
//! vouched for a dataset's digest), [`worker_annotations`] (a worker's byproduct).
//! docs/provenance.md documents every field.
//!
//! Each builder fills a typed view of the run and turns it into a [`JsonMap`], whose keys are
//! sorted (docs/provenance.md: "object keys sorted"), so the views declare their fields in the
//! order the docs list them. The API types are destructured exhaustively: a field added to one of
//! them is a compile error here, so that it is either recorded or deliberately left out of the
//! provenance.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements, Toleration};
use serde::Serialize;
use serde::ser::Error as _;
use serde_json::Value;

use super::LocalInvocation;
use super::statement::JsonMap;
use crate::api::{
    AcceleratorFacts, AcceleratorRequest, BaseModelRef, CodeRef, ContainerRecord, DatasetMaterial,
    DatasetRef, NamedDigest, OutputSpec, ReportRecord, Source, TrainingRunSpec, WorkerRecord,
};
use crate::execute::placement::Placement;

/// The JSON object of a typed view (a struct).
fn to_object(view: &impl Serialize) -> serde_json::Result<JsonMap> {
    match serde_json::to_value(view)? {
        Value::Object(map) => Ok(map),
        _ => Err(serde_json::Error::custom(
            "a view of the run is not a JSON object",
        )),
    }
}

/// `externalParameters` of a TrainingRun: the run as submitted.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExternalParameters<'a> {
    image: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    command: &'a [String],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    args: &'a [String],
    /// Values as written; `valueFrom` is recorded as the reference, never resolved.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    env: &'a [EnvVar],
    replicas: i32,
    seed: i64,
    /// The object as given, `{}` when none.
    hyperparameters: JsonMap,
    #[serde(skip_serializing_if = "Option::is_none")]
    accelerator: Option<AcceleratorParameter<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    datasets: Vec<DatasetParameter<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    base_model: Option<BaseModelParameter<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<CodeParameter<'a>>,
    output: OutputParameter<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    active_deadline_seconds: Option<i64>,
}

#[derive(Serialize)]
struct AcceleratorParameter<'a> {
    #[serde(rename = "type")]
    type_: &'a str,
    count: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    topology: Option<&'a str>,
}

#[derive(Serialize)]
struct DatasetParameter<'a> {
    name: &'a str,
    uri: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<&'a str>,
}

#[derive(Serialize)]
struct BaseModelParameter<'a> {
    uri: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<&'a str>,
}

#[derive(Serialize)]
struct CodeParameter<'a> {
    uri: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    revision: Option<&'a str>,
}

#[derive(Serialize)]
struct OutputParameter<'a> {
    repository: &'a str,
}

pub(super) fn external_parameters(spec: &TrainingRunSpec) -> serde_json::Result<JsonMap> {
    let accelerator = spec.accelerator.as_ref().map(|a| {
        let AcceleratorRequest {
            type_,
            count,
            topology,
        } = a;
        AcceleratorParameter {
            type_,
            count: *count,
            topology: topology.as_deref(),
        }
    });
    let datasets = spec
        .datasets
        .iter()
        .map(|d| {
            let DatasetRef { name, uri, digest } = d;
            DatasetParameter {
                name,
                uri,
                digest: digest.as_deref(),
            }
        })
        .collect();
    let base_model = spec.base_model.as_ref().map(|b| {
        let BaseModelRef { uri, digest } = b;
        BaseModelParameter {
            uri,
            digest: digest.as_deref(),
        }
    });
    let code = spec.code.as_ref().map(|c| {
        let CodeRef { uri, revision } = c;
        CodeParameter {
            uri,
            revision: revision.as_deref(),
        }
    });
    let OutputSpec { repository } = &spec.output;
    to_object(&ExternalParameters {
        image: &spec.image,
        command: &spec.command,
        args: &spec.args,
        env: &spec.env,
        replicas: spec.replicas,
        seed: spec.seed,
        hyperparameters: spec.hyperparameters.clone().unwrap_or_default(),
        accelerator,
        datasets,
        base_model,
        code,
        output: OutputParameter { repository },
        active_deadline_seconds: spec.active_deadline_seconds,
    })
}

/// The annotations of a `dataset:*` dependency: each party's digest in a field of its own, and
/// `source`, the parties that gave the descriptor's digest (docs/provenance.md).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DatasetAnnotations<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    declared_digest: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    observed_digest: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reported_digest: Option<&'a str>,
    source: Vec<&'static str>,
}

/// The annotations of the dataset `material`, which `declared` (when the spec names it) declares.
/// The declared digest is taken from the spec, never from the recorded sources: a status written
/// before sources were kept per digest labels a digest only the workload gave `Declared` too.
pub(super) fn dataset_annotations(
    material: &DatasetMaterial,
    declared: Option<&DatasetRef>,
) -> serde_json::Result<JsonMap> {
    let DatasetMaterial {
        name: _,
        uri: _,
        digest,
        sources,
    } = material;
    let digest = digest.as_deref();
    let by = |source: Source| digest.filter(|_| sources.contains(&source));
    let declared_digest = declared.and_then(|d| d.digest.as_deref());
    let (observed_digest, reported_digest) = (by(Source::Observed), by(Source::Reported));
    let source = match digest {
        // Who gave this very digest.
        Some(digest) => [
            ("declared", declared_digest),
            ("observed", observed_digest),
            ("reported", reported_digest),
        ]
        .into_iter()
        .filter(|(_, d)| *d == Some(digest))
        .map(|(party, _)| party)
        .collect(),
        // No digest: who named the dataset.
        None if declared.is_some() => vec!["declared"],
        None => vec![],
    };
    to_object(&DatasetAnnotations {
        declared_digest,
        observed_digest,
        reported_digest,
        source,
    })
}

/// `internalParameters` of a run the controller ran: where and as whom.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ClusterParameters<'a> {
    namespace: &'a str,
    service_account_name: &'a str,
    scheduling: Scheduling<'a>,
}

/// The scheduling constraints actually applied to the worker pods.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Scheduling<'a> {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    node_selector: BTreeMap<&'a str, &'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tolerations: Vec<&'a Toleration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    accelerator_resource: Option<AcceleratorResource<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resources: Option<&'a ResourceRequirements>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AcceleratorResource<'a> {
    name: &'a str,
    count_per_worker: i32,
}

pub(super) fn cluster_parameters(
    spec: &TrainingRunSpec,
    namespace: &str,
    placement: &Placement,
) -> serde_json::Result<JsonMap> {
    // The profile's node selector merged with the run's own (the run's wins).
    let node_selector = placement
        .node_selector
        .iter()
        .chain(spec.node_selector.iter().flatten())
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    // The profile's tolerations, then the run's.
    let tolerations = placement
        .tolerations
        .iter()
        .chain(spec.tolerations.iter().flatten())
        .collect();
    to_object(&ClusterParameters {
        namespace,
        service_account_name: spec.service_account_name.as_deref().unwrap_or("default"),
        scheduling: Scheduling {
            node_selector,
            tolerations,
            accelerator_resource: placement.resource.as_ref().map(|(name, count)| {
                AcceleratorResource {
                    name,
                    count_per_worker: *count,
                }
            }),
            resources: spec.resources.as_ref(),
        },
    })
}

/// `internalParameters` of a run `provenant attest` ran on a host.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LocalParameters<'a> {
    host: &'a Value,
    working_directory: &'a str,
    command: &'a [String],
}

pub(super) fn local_parameters(local: &LocalInvocation) -> serde_json::Result<JsonMap> {
    let LocalInvocation {
        host,
        working_directory,
        command,
        code: _, // a resolved dependency, not a parameter
    } = local;
    to_object(&LocalParameters {
        host,
        working_directory,
        command,
    })
}

/// The annotations of a worker's byproduct: what the controller observed apart from what the
/// workload reported.
#[derive(Serialize)]
struct WorkerAnnotations<'a> {
    observed: ObservedWorker<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reported: Option<ReportedWorker<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ObservedWorker<'a> {
    rank: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    phase: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_at: Option<String>,
    containers: Vec<Container<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    accelerator: Option<Accelerator<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Container<'a> {
    name: &'a str,
    image: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image_id: Option<&'a str>,
}

/// A node's accelerator facts when the worker finished.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Accelerator<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    product: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    driver_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cuda_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tpu_topology: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    instance_type: Option<&'a str>,
    /// Every accelerator label of the node, verbatim.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    allocated: Option<i64>,
}

/// The workload's report (all three keys always present).
#[derive(Serialize)]
struct ReportedWorker<'a> {
    /// Evaluation metrics; a non-finite value is written as `null`.
    metrics: &'a BTreeMap<String, f64>,
    datasets: Vec<ReportedDataset<'a>>,
    outputs: &'a [String],
}

#[derive(Serialize)]
struct ReportedDataset<'a> {
    name: &'a str,
    digest: &'a str,
}

fn container(c: &ContainerRecord) -> Container<'_> {
    let ContainerRecord {
        name,
        image,
        digest,
        image_id,
    } = c;
    Container {
        name,
        image,
        digest: digest.as_deref(),
        image_id: image_id.as_deref(),
    }
}

fn accelerator(facts: &AcceleratorFacts) -> Accelerator<'_> {
    let AcceleratorFacts {
        product,
        count,
        memory,
        driver_version,
        cuda_version,
        tpu_topology,
        instance_type,
        allocated,
        labels,
    } = facts;
    Accelerator {
        product: product.as_deref(),
        count: count.as_deref(),
        memory: memory.as_deref(),
        driver_version: driver_version.as_deref(),
        cuda_version: cuda_version.as_deref(),
        tpu_topology: tpu_topology.as_deref(),
        instance_type: instance_type.as_deref(),
        labels,
        allocated: *allocated,
    }
}

fn reported(report: &ReportRecord) -> ReportedWorker<'_> {
    let ReportRecord {
        outputs,
        datasets,
        metrics,
    } = report;
    ReportedWorker {
        metrics,
        datasets: datasets
            .iter()
            .map(|d| {
                let NamedDigest { name, digest } = d;
                ReportedDataset { name, digest }
            })
            .collect(),
        outputs,
    }
}

/// The annotations of `w`'s byproduct. Not recorded there: `pod_name` and `report_digest` (the
/// descriptor's name and digest) and `report_error` (why a report was refused; the run's
/// conditions carry it).
pub(super) fn worker_annotations(w: &WorkerRecord) -> serde_json::Result<JsonMap> {
    let WorkerRecord {
        pod_name: _,
        rank,
        node_name,
        phase,
        exit_code,
        reason,
        started_at,
        finished_at,
        containers,
        accelerator: facts,
        report_digest: _,
        report,
        report_error: _,
    } = w;
    to_object(&WorkerAnnotations {
        observed: ObservedWorker {
            rank: *rank,
            node: node_name.as_deref(),
            phase: phase.as_deref(),
            exit_code: *exit_code,
            reason: reason.as_deref(),
            started_at: started_at.as_ref().map(|t| super::rfc3339(&t.0)),
            finished_at: finished_at.as_ref().map(|t| super::rfc3339(&t.0)),
            containers: containers.iter().map(container).collect(),
            accelerator: facts.as_ref().map(accelerator),
        },
        reported: report.as_ref().map(reported),
    })
}
