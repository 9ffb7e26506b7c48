//! What provenant observed and recorded about a run (`status`): the phase, the conditions, the
//! worker pods it created and their records, the attempts, the materials, the provenance. Written
//! only by the controller; tenants cannot write a run's status (RBAC, docs/security.md).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::compact;
use super::{
    Attempt, CreatedPod, MAX_ATTEMPTS, MAX_SUSPENSIONS, Materials, OutputRecord, Suspension,
};

/// Lifecycle phase of a run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum Phase {
    /// Accepted; workers not all running yet.
    #[default]
    Pending,
    /// Every worker has started and none has failed.
    Running,
    /// Every worker exited 0 and the materials are recorded.
    Succeeded,
    /// A worker failed, the deadline passed, or the run could not be executed.
    Failed,
}

/// What provenant observed and recorded about a run. Written only by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrainingRunStatus {
    /// Pending, Running, Succeeded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// `Succeeded`, `MaterialsRecorded`, `ProvenanceSigned`, `ProvenanceAttached`, with reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// When the controller created the first worker; the spec is immutable from then on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,

    /// When the run reached Succeeded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The worker pods the controller created, by UID: the only pods it observes (docs/security.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub worker_pods: Vec<CreatedPod>,

    /// One record per worker pod, filled as the pods terminate; whole here, written compactly.
    #[serde(flatten, with = "compact")]
    #[schemars(with = "compact::Workers")]
    pub workers: Vec<WorkerRecord>,

    /// Every attempt of the run, in order: a failed worker restarts all of them as a new attempt
    /// (`spec.failurePolicy`), suspending ends one (`spec.suspend`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_ATTEMPTS))]
    pub attempts: Vec<Attempt>,

    /// Every time the run was suspended (`spec.suspend`), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_SUSPENSIONS))]
    pub suspensions: Vec<Suspension>,

    /// The run's materials, merged from the spec, the pods and the workload reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub materials: Option<Materials>,

    /// Model artifacts the run produced (reported by the workload, checked by the controller).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<OutputRecord>,

    /// Signing and attachment of the run's provenance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<ProvenanceStatus>,
}

/// Where a recorded fact comes from. Observed and reported facts stay distinguishable all the
/// way into the provenance: the controller is trusted, the workload is not.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Source {
    /// Given in the TrainingRun spec.
    Declared,
    /// Seen by the controller itself (pod status, node labels, registry).
    Observed,
    /// Said by the workload in its termination message.
    Reported,
}

/// What the controller recorded about one worker pod.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerRecord {
    /// Worker pod name.
    pub pod_name: String,
    /// Rank of the worker (0-based).
    pub rank: i32,
    /// The attempt the worker belongs to (`status.attempts[].index`; absent: 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt: i32,
    /// Node the worker ran on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Final pod phase (Succeeded or Failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Exit code of the training container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Termination reason (`Completed`, `Error`, `OOMKilled`, `DeadlineExceeded`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the training container started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the training container finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Every container of the pod with the image digest the kubelet reported.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<ContainerRecord>,
    /// Accelerator facts read from the node's labels when the worker finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accelerator: Option<AcceleratorFacts>,
    /// `sha256:` digest of the worker's termination message (its report), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_digest: Option<String>,
    /// What the worker reported in its termination message, after validation. Reported, not
    /// observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<ReportRecord>,
    /// Why the worker's report was refused, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_error: Option<String>,
}

/// A worker's validated report (docs/workload-report.md).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReportRecord {
    /// Output references, `repository[:tag]@sha256:<hex>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<String>,
    /// Dataset digests the worker read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datasets: Vec<NamedDigest>,
    /// Evaluation metrics, name → number.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
}

/// A name and a `sha256:` digest.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamedDigest {
    pub name: String,
    pub digest: String,
}

/// A container of a worker and the image it actually ran.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecord {
    /// Container name.
    pub name: String,
    /// Image reference as written in the pod spec.
    pub image: String,
    /// Image digest from the pod's `containerStatuses[].imageID`, `sha256:<hex>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// `imageID` exactly as the kubelet reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
}

/// Accelerator facts of a node, from GPU feature discovery / GKE labels. Every field is what the
/// node said; absent labels stay absent.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AcceleratorFacts {
    /// Product or model, e.g. `NVIDIA-A100-SXM4-80GB`, `nvidia-l4`, `tpu-v5-lite-podslice`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    /// Accelerators on the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<String>,
    /// Memory per accelerator as labelled (MiB for GPU feature discovery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Driver version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_version: Option<String>,
    /// CUDA runtime version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuda_version: Option<String>,
    /// TPU slice topology (GKE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpu_topology: Option<String>,
    /// Cloud instance type of the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    /// Accelerators allocated to the worker (from its pod spec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated: Option<i64>,
    /// Every accelerator-related label of the node, verbatim (the evidence behind the fields above).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// State of a run's provenance.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ProvenanceState {
    /// Waiting for the run to finish or for its outputs to resolve.
    Pending,
    /// Signed and persisted in the cluster, not yet attached in the registry.
    Signed,
    /// Attached to the model in the registry.
    Attached,
    /// Failed permanently (see the conditions).
    Failed,
    /// Provenance is disabled in the controller configuration.
    Disabled,
}

/// Signing and attachment of the run's provenance.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProvenanceStatus {
    /// Pending, Signed, Attached, Failed or Disabled.
    pub state: ProvenanceState,
    /// Predicate type of the statement, `https://slsa.dev/provenance/v1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicate_type: Option<String>,
    /// `sha256:` digest of the signed DSSE envelope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envelope_digest: Option<String>,
    /// Id of the signing key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// ConfigMap in the controller's namespace holding the signed record (`provenance-<run UID>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envelope_config_map: Option<String>,
    /// Registry references of the attached attestation, signature and referrer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attestations: Vec<String>,
    /// When the envelope was signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_at: Option<Time>,
    /// When the envelope was attached in the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached_at: Option<Time>,
}

impl ProvenanceStatus {
    /// A provenance status in `state`, nothing signed or attached yet.
    pub fn new(state: ProvenanceState) -> Self {
        ProvenanceStatus {
            state,
            predicate_type: None,
            envelope_digest: None,
            key_id: None,
            envelope_config_map: None,
            attestations: vec![],
            signed_at: None,
            attached_at: None,
        }
    }
}

/// Attempt 0 is left out of a worker record (a run that never restarted reads as before).
fn is_zero(n: &i32) -> bool {
    *n == 0
}
