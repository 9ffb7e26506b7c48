//! The JSON objects whose content is provenant's own (`externalParameters`, `internalParameters`,
//! a worker's byproduct annotations) as typed views borrowing from the run: serialized once into a
//! [`JsonObject`](super::statement::JsonObject) when the statement is built, without copying the
//! run's strings or building `serde_json::Value` trees.
//!
//! Every struct declares its fields in the byte order of their JSON names, so that its JSON is
//! that of a sorted JSON object (docs/provenance.md: "object keys sorted"); the bytes are checked
//! against a builder made of sorted `serde_json::Value` maps by
//! `controller/tests/provenance_golden.rs`. The API types are destructured exhaustively: a field
//! added to one of them is a compile error here, so that it is either recorded or deliberately
//! left out of the provenance.

use std::collections::BTreeMap;

use serde::ser::Error as _;
use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::api::{
    AcceleratorFacts, AcceleratorRequest, BaseModelRef, CodeRef, ContainerRecord, DatasetRef,
    NamedDigest, OutputSpec, ReportRecord, TrainingRunSpec, WorkerRecord,
};
use crate::config::Placement;

/// The items of a slice, each serialized as the view `view` makes of it.
struct Each<'a, T, V>(&'a [T], fn(&'a T) -> V);

impl<T, V> Each<'_, T, V> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a, T, V: Serialize> Serialize for Each<'a, T, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(self.1))
    }
}

/// A type whose own serialization is not in sorted key order (Kubernetes API types), serialized
/// through a `serde_json::Value`, whose maps are sorted.
struct SortedJson<'a, T>(&'a T);

impl<T: Serialize> Serialize for SortedJson<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serde_json::to_value(self.0)
            .map_err(S::Error::custom)?
            .serialize(serializer)
    }
}

/// A timestamp as `runDetails` and the byproducts write it (see [`super::rfc3339`]).
struct Rfc3339<'a>(&'a jiff::Timestamp);

impl Serialize for Rfc3339<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut buffer = [0u8; 20];
        match super::rfc3339_into(self.0, &mut buffer) {
            Some(text) => serializer.serialize_str(text),
            None => serializer.serialize_str(&super::rfc3339(self.0)),
        }
    }
}

/// `hyperparameters`: the object as given, `{}` when none.
struct Hyperparameters<'a>(Option<&'a serde_json::Map<String, Value>>);

impl Serialize for Hyperparameters<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(map) => map.serialize(serializer),
            None => serializer.collect_map(std::iter::empty::<(&str, &Value)>()),
        }
    }
}

/// `externalParameters` of a TrainingRun: the run as submitted.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ExternalParameters<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    accelerator: Option<AcceleratorParameter<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    active_deadline_seconds: Option<i64>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    args: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    base_model: Option<DigestUri<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<CodeParameter<'a>>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    command: &'a [String],
    #[serde(skip_serializing_if = "Each::is_empty")]
    datasets: Each<'a, DatasetRef, DatasetParameter<'a>>,
    /// Values as written; `valueFrom` is recorded as the reference, never resolved.
    #[serde(skip_serializing_if = "Each::is_empty")]
    env: Each<
        'a,
        k8s_openapi::api::core::v1::EnvVar,
        SortedJson<'a, k8s_openapi::api::core::v1::EnvVar>,
    >,
    hyperparameters: Hyperparameters<'a>,
    image: &'a str,
    output: OutputParameter<'a>,
    replicas: i32,
    seed: i64,
}

#[derive(Serialize)]
struct AcceleratorParameter<'a> {
    count: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    topology: Option<&'a str>,
    #[serde(rename = "type")]
    type_: &'a str,
}

#[derive(Serialize)]
struct DigestUri<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<&'a str>,
    uri: &'a str,
}

#[derive(Serialize)]
struct CodeParameter<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    revision: Option<&'a str>,
    uri: &'a str,
}

#[derive(Serialize)]
struct DatasetParameter<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<&'a str>,
    name: &'a str,
    uri: &'a str,
}

#[derive(Serialize)]
struct OutputParameter<'a> {
    repository: &'a str,
}

pub(super) fn external_parameters(spec: &TrainingRunSpec) -> ExternalParameters<'_> {
    let accelerator = spec.accelerator.as_ref().map(|a| {
        let AcceleratorRequest {
            type_,
            count,
            topology,
        } = a;
        AcceleratorParameter {
            count: *count,
            topology: topology.as_deref(),
            type_,
        }
    });
    let base_model = spec.base_model.as_ref().map(|b| {
        let BaseModelRef { uri, digest } = b;
        DigestUri {
            digest: digest.as_deref(),
            uri,
        }
    });
    let code = spec.code.as_ref().map(|c| {
        let CodeRef { uri, revision } = c;
        CodeParameter {
            revision: revision.as_deref(),
            uri,
        }
    });
    let OutputSpec { repository } = &spec.output;
    ExternalParameters {
        accelerator,
        active_deadline_seconds: spec.active_deadline_seconds,
        args: &spec.args,
        base_model,
        code,
        command: &spec.command,
        datasets: Each(&spec.datasets, |d| {
            let DatasetRef { name, uri, digest } = d;
            DatasetParameter {
                digest: digest.as_deref(),
                name,
                uri,
            }
        }),
        env: Each(&spec.env, SortedJson),
        hyperparameters: Hyperparameters(spec.hyperparameters.as_ref()),
        image: &spec.image,
        output: OutputParameter { repository },
        replicas: spec.replicas,
        seed: spec.seed,
    }
}

/// `internalParameters` of a run the controller ran: where and as whom.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ClusterParameters<'a> {
    namespace: &'a str,
    scheduling: Scheduling<'a>,
    service_account_name: &'a str,
}

/// The scheduling constraints actually applied to the worker pods.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Scheduling<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    accelerator_resource: Option<AcceleratorResource<'a>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    node_selector: BTreeMap<&'a str, &'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resources: Option<SortedJson<'a, k8s_openapi::api::core::v1::ResourceRequirements>>,
    #[serde(skip_serializing_if = "Tolerations::is_empty")]
    tolerations: Tolerations<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AcceleratorResource<'a> {
    count_per_worker: i32,
    name: &'a str,
}

/// The profile's tolerations, then the run's.
struct Tolerations<'a>(
    &'a [k8s_openapi::api::core::v1::Toleration],
    &'a [k8s_openapi::api::core::v1::Toleration],
);

impl Tolerations<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty() && self.1.is_empty()
    }
}

impl Serialize for Tolerations<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().chain(self.1).map(SortedJson))
    }
}

pub(super) fn cluster_parameters<'a>(
    spec: &'a TrainingRunSpec,
    namespace: &'a str,
    placement: &'a Placement,
) -> ClusterParameters<'a> {
    // The profile's node selector merged with the run's own (the run's wins).
    let mut node_selector: BTreeMap<&str, &str> = placement
        .node_selector
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    node_selector.extend(
        spec.node_selector
            .iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    ClusterParameters {
        namespace,
        scheduling: Scheduling {
            accelerator_resource: placement.resource.as_ref().map(|(name, count)| {
                AcceleratorResource {
                    count_per_worker: *count,
                    name,
                }
            }),
            node_selector,
            resources: spec.resources.as_ref().map(SortedJson),
            tolerations: Tolerations(
                &placement.tolerations,
                spec.tolerations.as_deref().unwrap_or_default(),
            ),
        },
        service_account_name: spec.service_account_name.as_deref().unwrap_or("default"),
    }
}

/// `internalParameters` of a run `provenant attest` ran on a host.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct LocalParameters<'a> {
    pub command: &'a [String],
    pub host: &'a Value,
    pub working_directory: &'a str,
}

/// The annotations of a worker's byproduct: what the controller observed apart from what the
/// workload reported.
#[derive(Serialize)]
pub(super) struct WorkerAnnotations<'a> {
    observed: ObservedWorker<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reported: Option<ReportedWorker<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ObservedWorker<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    accelerator: Option<Accelerator<'a>>,
    containers: Each<'a, ContainerRecord, Container<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_at: Option<Rfc3339<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    phase: Option<&'a str>,
    rank: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<Rfc3339<'a>>,
}

/// A node's accelerator facts.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Accelerator<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    allocated: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cuda_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    driver_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    instance_type: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    product: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tpu_topology: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Container<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<&'a str>,
    image: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    image_id: Option<&'a str>,
    name: &'a str,
}

/// The workload's report (all three keys always present).
#[derive(Serialize)]
struct ReportedWorker<'a> {
    datasets: Each<'a, NamedDigest, Digest<'a>>,
    metrics: &'a BTreeMap<String, f64>,
    outputs: &'a [String],
}

#[derive(Serialize)]
struct Digest<'a> {
    digest: &'a str,
    name: &'a str,
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
        allocated: *allocated,
        count: count.as_deref(),
        cuda_version: cuda_version.as_deref(),
        driver_version: driver_version.as_deref(),
        instance_type: instance_type.as_deref(),
        labels,
        memory: memory.as_deref(),
        product: product.as_deref(),
        tpu_topology: tpu_topology.as_deref(),
    }
}

fn container(c: &ContainerRecord) -> Container<'_> {
    let ContainerRecord {
        name,
        image,
        digest,
        image_id,
    } = c;
    Container {
        digest: digest.as_deref(),
        image,
        image_id: image_id.as_deref(),
        name,
    }
}

fn reported(report: &ReportRecord) -> ReportedWorker<'_> {
    let ReportRecord {
        outputs,
        datasets,
        metrics,
    } = report;
    ReportedWorker {
        datasets: Each(datasets, |d| {
            let NamedDigest { name, digest } = d;
            Digest { digest, name }
        }),
        metrics,
        outputs,
    }
}

/// The annotations of `w`'s byproduct. Not recorded there: `pod_name` and `report_digest` (the
/// descriptor's name and digest) and `report_error` (why a report was refused; the run's
/// conditions carry it).
pub(super) fn worker_annotations(w: &WorkerRecord) -> WorkerAnnotations<'_> {
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
    WorkerAnnotations {
        observed: ObservedWorker {
            accelerator: facts.as_ref().map(accelerator),
            containers: Each(containers, container),
            exit_code: *exit_code,
            finished_at: finished_at.as_ref().map(|t| Rfc3339(&t.0)),
            node: node_name.as_deref(),
            phase: phase.as_deref(),
            rank: *rank,
            reason: reason.as_deref(),
            started_at: started_at.as_ref().map(|t| Rfc3339(&t.0)),
        },
        reported: report.as_ref().map(reported),
    }
}
