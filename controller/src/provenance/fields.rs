//! The JSON objects whose content is provenant's own, one builder per field of the mapping table
//! of DESIGN.md: [`external_parameters`], [`cluster_parameters`] and [`local_parameters`] (the
//! `internalParameters` of a run in a cluster and on a host), [`dataset_annotations`] (who
//! vouched for a dataset's digest), [`worker_annotations`] (a worker's byproduct).
//! docs/provenance.md documents every field.
//!
//! Each builder fills a typed view of the run and writes it once as an [`Object`]. The docs
//! promise sorted object keys, and a struct is written in declaration order, so **every view
//! declares its fields in key order** (the JSON names; the tests below check each view on a run
//! that fills every field). The API types are destructured exhaustively: a field added to one of
//! them is a compile error here, so that it is either recorded or deliberately left out of the
//! provenance.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use serde::Serialize;
use serde_json::Value;

use super::LocalInvocation;
use super::statement::{JsonMap, Object};
use crate::api::{
    AcceleratorRequest, BaseModelRef, CodeRef, DatasetMaterial, DatasetRef, FailurePolicy,
    OutputSpec, Source, TrainingRunSpec, TrainingRunStatus,
};
use crate::api::{PodTemplate, PodTemplateMetadata, PodTemplatePlacement};
use crate::execute::{WorkerSecurity, placement::Placement, rendezvous, worker_security};

mod attempts;
mod worker;
pub(super) use worker::worker_annotations;

/// `externalParameters` of a TrainingRun: the run as submitted.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExternalParameters<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    accelerator: Option<AcceleratorParameter<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    active_deadline_seconds: Option<i64>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    args: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    base_model: Option<BaseModelParameter<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<CodeParameter<'a>>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    command: &'a [String],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    datasets: Vec<DatasetParameter<'a>>,
    /// Values as written; `valueFrom` is recorded as the reference, never resolved.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    env: &'a [EnvVar],
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_policy: Option<&'a FailurePolicy>,
    /// The object as given, `{}` when none.
    hyperparameters: Cow<'a, JsonMap>,
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
struct DatasetParameter<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    license: Option<&'a str>,
    name: &'a str,
    uri: &'a str,
}

#[derive(Serialize)]
struct BaseModelParameter<'a> {
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
struct OutputParameter<'a> {
    repository: &'a str,
}

pub(super) fn external_parameters(spec: &TrainingRunSpec) -> serde_json::Result<Object> {
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
            let DatasetRef {
                name,
                uri,
                digest,
                license,
            } = d;
            DatasetParameter {
                name,
                uri,
                digest: digest.as_deref(),
                license: license.as_deref(),
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
    Object::of(&ExternalParameters {
        accelerator,
        active_deadline_seconds: spec.active_deadline_seconds,
        args: &spec.args,
        base_model,
        code,
        command: &spec.command,
        datasets,
        env: &spec.env,
        failure_policy: spec.failure_policy.as_ref(),
        hyperparameters: spec
            .hyperparameters
            .as_ref()
            .map_or_else(|| Cow::Owned(JsonMap::new()), Cow::Borrowed),
        image: &spec.image,
        output: OutputParameter { repository },
        replicas: spec.replicas,
        seed: spec.seed,
    })
}

/// The annotations of a resolved dependency: who vouches for it, and what else is known.
#[derive(Serialize)]
struct DependencyAnnotations<'a> {
    /// Local code only: whether the working tree had uncommitted changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    dirty: Option<bool>,
    /// Images only: the image as written in the pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    reference: Option<&'a str>,
    source: &'a [&'a str],
}

pub(super) fn dependency_annotations(
    source: &[&str],
    reference: Option<&str>,
    dirty: Option<bool>,
) -> serde_json::Result<Object> {
    Object::of(&DependencyAnnotations {
        dirty,
        reference,
        source,
    })
}

/// The annotations of a `dataset:*` dependency: each party's digest in a field of its own, and
/// `source`, the parties that gave the descriptor's digest (docs/provenance.md).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DatasetAnnotations<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    declared_digest: Option<&'a str>,
    /// `spec.datasets[].license`: the submitter's word, like everything declared.
    #[serde(skip_serializing_if = "Option::is_none")]
    declared_license: Option<&'a str>,
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
) -> serde_json::Result<Object> {
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
    Object::of(&DatasetAnnotations {
        declared_digest,
        declared_license: declared.and_then(|d| d.license.as_deref()),
        observed_digest,
        reported_digest,
        source,
    })
}

/// `internalParameters` of a run the controller ran: where and as whom.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ClusterParameters<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    attempts: Vec<attempts::AttemptParameter<'a>>,
    namespace: &'a str,
    rendezvous: RendezvousRecord<'a>,
    scheduling: Scheduling<'a>,
    service_account_name: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    suspensions: Vec<attempts::SuspensionParameter>,
    worker_security: WorkerSecurity,
}

/// The distributed-training environment provenant set on the workers (execute/rendezvous.rs).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RendezvousRecord<'a> {
    /// Variables with the same value on every worker.
    environment: BTreeMap<&'static str, &'a str>,
    framework: &'static str,
    /// Variables set to the worker's rank.
    rank_environment: &'a [&'static str],
}

/// The scheduling constraints actually applied to the worker pods.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Scheduling<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    accelerator_resource: Option<AcceleratorResource<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    affinity: Option<&'a Affinity>,
    /// The Kueue pod group (and Workload) of the workers, with `queueName`.
    #[serde(skip_serializing_if = "Option::is_none")]
    kueue_pod_group_name: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    node_selector: BTreeMap<&'a str, &'a str>,
    /// `spec.podTemplate.metadata.annotations`, added to provenant's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pod_annotations: Option<&'a BTreeMap<String, String>>,
    /// `spec.podTemplate.metadata.labels`, added to provenant's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pod_labels: Option<&'a BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority_class_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    queue_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resources: Option<&'a ResourceRequirements>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tolerations: Vec<&'a Toleration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    topology_spread_constraints: Option<&'a [TopologySpreadConstraint]>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AcceleratorResource<'a> {
    count_per_worker: i32,
    name: &'a str,
}

pub(super) fn cluster_parameters(
    spec: &TrainingRunSpec,
    name: &str,
    status: &TrainingRunStatus,
    namespace: &str,
    placement: &Placement,
    pod_group: Option<&str>,
) -> serde_json::Result<Object> {
    let PodTemplate {
        metadata,
        spec: pod_spec,
    } = spec.pod_template.clone().unwrap_or_default();
    let PodTemplateMetadata {
        labels: pod_labels,
        annotations: pod_annotations,
    } = metadata.unwrap_or_default();
    let PodTemplatePlacement {
        affinity,
        topology_spread_constraints,
    } = pod_spec.unwrap_or_default();
    let rendezvous = rendezvous(name, spec.replicas, spec.framework, placement);
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
    Object::of(&ClusterParameters {
        attempts: attempts::attempts(status),
        namespace,
        rendezvous: RendezvousRecord {
            environment: rendezvous.shared_map(),
            framework: rendezvous.framework.as_str(),
            rank_environment: &rendezvous.per_rank,
        },
        scheduling: Scheduling {
            accelerator_resource: placement.resource.as_ref().map(|(name, count)| {
                AcceleratorResource {
                    count_per_worker: *count,
                    name,
                }
            }),
            affinity: affinity.as_ref(),
            kueue_pod_group_name: spec.queue_name.as_ref().and(pod_group),
            node_selector,
            pod_annotations: pod_annotations.as_ref().filter(|m| !m.is_empty()),
            pod_labels: pod_labels.as_ref().filter(|m| !m.is_empty()),
            priority_class_name: spec.priority_class_name.as_deref(),
            queue_name: spec.queue_name.as_deref(),
            resources: spec.resources.as_ref(),
            tolerations,
            topology_spread_constraints: topology_spread_constraints
                .as_deref()
                .filter(|c| !c.is_empty()),
        },
        service_account_name: spec.service_account_name.as_deref().unwrap_or("default"),
        suspensions: attempts::suspensions(status),
        worker_security: worker_security(spec),
    })
}

/// `internalParameters` of a run `provenant attest` ran on a host.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LocalParameters<'a> {
    command: &'a [String],
    host: &'a Value,
    working_directory: &'a str,
}

pub(super) fn local_parameters(local: &LocalInvocation) -> serde_json::Result<Object> {
    let LocalInvocation {
        host,
        working_directory,
        command,
        code: _, // a resolved dependency, not a parameter
    } = local;
    Object::of(&LocalParameters {
        command,
        host,
        working_directory,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::api::WorkerRecord;

    use super::*;

    /// Written keys are sorted at every depth: the object equals its own re-serialization
    /// through a sorted map.
    fn assert_sorted(object: &Object) {
        let map = object.to_map().expect("an object");
        assert_eq!(
            object.as_str(),
            serde_json::to_string(&map).expect("writes"),
            "keys out of order: a view declares its fields out of key order"
        );
    }

    /// A run with every field the views write filled in.
    fn full_spec() -> TrainingRunSpec {
        serde_json::from_value(json!({
            "image": "reg.io/train@sha256:aa", "command": ["python"], "args": ["-m", "t"],
            "env": [
                {"name": "A", "value": "1"},
                {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k", "optional": true}}},
                {"name": "C", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name", "apiVersion": "v1"}}},
                {"name": "D", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}},
                {"name": "E", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "containerName": "t", "divisor": "1"}}}
            ],
            "replicas": 2, "seed": 7,
            "hyperparameters": {"z": 1, "a": {"y": 2, "b": 3}},
            "accelerator": {"type": "tpu-v5e", "count": 4, "topology": "2x4"},
            "datasets": [{"name": "d", "uri": "gs://d", "digest": "sha256:bb", "license": "CC-BY-4.0"}],
            "baseModel": {"uri": "reg.io/base", "digest": "sha256:cc"},
            "code": {"uri": "https://git/x", "revision": "abc"},
            "output": {"repository": "reg.io/models/m"},
            "activeDeadlineSeconds": 60,
            "failurePolicy": {"maxRestarts": 2, "nonRetriableExitCodes": [42]},
            "nodeSelector": {"pool": "tpu"},
            "tolerations": [{"key": "k", "operator": "Equal", "value": "v", "effect": "NoExecute", "tolerationSeconds": 5}],
            "resources": {"limits": {"cpu": "2", "memory": "1Gi"}, "requests": {"cpu": "1"}, "claims": [{"name": "gpu", "request": "r"}]},
            "serviceAccountName": "trainer",
            "framework": "jax",
            "podTemplate": {
                "metadata": {"labels": {"team": "nlp", "a": "b"}, "annotations": {"gke-gcsfuse/volumes": "true"}},
                "spec": {
                    "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                        {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"provenant.dev/run": "run"}}}
                    ]}},
                    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
                        "labelSelector": {"matchLabels": {"provenant.dev/run": "run"}}}]
                }
            },
            "priorityClassName": "high", "queueName": "team-a"
        }))
        .expect("a full spec")
    }

    #[test]
    fn every_view_writes_its_keys_in_order() {
        let spec = full_spec();
        assert_sorted(&external_parameters(&spec).expect("writes"));
        let placement = Placement {
            node_selector: BTreeMap::from([("cloud.google.com/gke-tpu".into(), "v5e".into())]),
            tolerations: spec.tolerations.clone().unwrap_or_default(),
            resource: Some(("google.com/tpu".into(), 4)),
        };
        let status: TrainingRunStatus = serde_json::from_value(json!({
            "attempts": [
                {"index": 0, "startTime": "2026-11-20T10:00:00Z", "endTime": "2026-11-20T10:05:00Z",
                 "reason": "WorkerEvicted", "message": "m", "pods": ["p-0"]},
                {"index": 1, "startTime": "2026-11-20T10:06:00Z"}
            ],
            "suspensions": [{"startTime": "2026-11-20T09:00:00Z", "endTime": "2026-11-20T09:30:00Z"}]
        }))
        .expect("a status");
        let internal = cluster_parameters(&spec, "run", &status, "ns", &placement, Some("m-1"))
            .expect("writes");
        assert_sorted(&internal);
        let map = internal.to_map().expect("an object");
        assert_eq!(map["attempts"][0]["reason"], "WorkerEvicted");
        assert_eq!(map["suspensions"][0]["endTime"], "2026-11-20T09:30:00Z");
        let scheduling = &map["scheduling"];
        for key in [
            "affinity",
            "kueuePodGroupName",
            "priorityClassName",
            "queueName",
            "podAnnotations",
            "podLabels",
            "topologySpreadConstraints",
        ] {
            assert!(scheduling.get(key).is_some(), "scheduling.{key} missing");
        }
        let local = LocalInvocation {
            host: json!({"hostname": "h", "arch": "x86_64", "cpus": 2}),
            working_directory: "/w".into(),
            command: vec!["python".into()],
            code: None,
        };
        assert_sorted(&local_parameters(&local).expect("writes"));
        assert_sorted(
            &dependency_annotations(&["declared", "observed"], Some("r"), Some(true))
                .expect("writes"),
        );
        let material: DatasetMaterial = serde_json::from_value(json!({
            "name": "d", "uri": "gs://d", "digest": "sha256:bb",
            "sources": ["Declared", "Observed", "Reported"]
        }))
        .expect("a material");
        assert_sorted(&dataset_annotations(&material, spec.datasets.first()).expect("writes"));
        let worker: WorkerRecord = serde_json::from_value(json!({
            "podName": "p-0-a1", "rank": 0, "attempt": 1, "nodeName": "n", "phase": "Succeeded", "exitCode": 0,
            "reason": "Completed", "startedAt": "2026-11-20T10:00:12Z", "finishedAt": "2026-11-20T12:00:00Z",
            "containers": [{"name": "t", "image": "reg.io/t", "digest": "sha256:aa", "imageId": "reg.io/t@sha256:aa"}],
            "accelerator": {"product": "TPU", "count": "4", "memory": "16", "driverVersion": "1",
                "cudaVersion": "12", "tpuTopology": "2x4", "instanceType": "ct5lp", "allocated": 4,
                "labels": {"z": "1", "a": "2"}},
            "reportDigest": "sha256:dd",
            "report": {"outputs": ["reg.io/models/m@sha256:ee"], "datasets": [{"name": "d", "digest": "sha256:bb"}],
                "metrics": {"loss": 0.5, "acc": 0.9}}
        }))
        .expect("a full worker record");
        let annotations = worker_annotations(&worker).expect("writes");
        assert_sorted(&annotations);
        // Every field made it (a typo'd skip would drop one silently).
        let observed = &annotations.to_map().expect("an object")["observed"];
        for key in [
            "accelerator",
            "attempt",
            "containers",
            "exitCode",
            "finishedAt",
            "node",
            "phase",
            "rank",
            "reason",
            "startedAt",
        ] {
            assert!(
                observed.get(key).is_some(),
                "observed.{key} missing: {observed}"
            );
        }
    }
}
