//! The `TrainingRun` API (`provenant.dev/v1alpha1`): the contract Kubeflow pipelines and users
//! write against. The CRD in `crds/` is generated from these types (`provenant crds`), so the
//! doc comments below are what `kubectl explain trainingrun.spec` shows.
//!
//! Validation lives in the generated schema (OpenAPI keywords and CEL `x-kubernetes-validations`)
//! so that the API server refuses a bad run before anything is scheduled. Every CEL rule carries a
//! message that names the field; the rules only use standard CEL plus bounded lists and strings,
//! so the API server's cost estimator accepts them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements, Toleration, Volume, VolumeMount};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every provenant resource.
pub const GROUP: &str = "provenant.dev";
/// Served (and stored) version.
pub const VERSION: &str = "v1alpha1";

/// Upper bound on `spec.replicas`. Status keeps one record per worker, inside etcd's 1.5 MiB request
/// limit: what they share is written once ([`compact`]), so 1,024 GPU workers take ~0.35 MB.
pub const MAX_REPLICAS: i32 = 1024;

/// Environment variables provenant sets on every worker; a spec may not set them (nor anything
/// else starting with `PROVENANT_`), or the recorded rank, world size, seed and hyperparameters
/// would not be what the workload saw.
/// Every name `spec.framework` or a multi-host TPU slice may make provenant set
/// (execute/rendezvous.rs), whatever the run's framework.
pub const RESERVED_ENV: [&str; 16] = [
    "RANK",
    "WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "LOCAL_RANK",
    "NNODES",
    "NODE_RANK",
    "PET_NNODES",
    "PET_NODE_RANK",
    "PET_MASTER_ADDR",
    "PET_MASTER_PORT",
    "JAX_COORDINATOR_ADDRESS",
    "JAX_NUM_PROCESSES",
    "JAX_PROCESS_ID",
    "TPU_WORKER_ID",
    "TPU_WORKER_HOSTNAMES",
];
/// Prefix of the environment variables provenant owns (`PROVENANT_SEED`, ...).
pub const RESERVED_ENV_PREFIX: &str = "PROVENANT_";

/// The CEL form of [`RESERVED_ENV`] (a unit test keeps them in step).
const RESERVED_ENV_RULE: &str = "self.all(e, !(e.name in ['RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT', 'LOCAL_RANK', 'NNODES', 'NODE_RANK', 'PET_NNODES', 'PET_NODE_RANK', 'PET_MASTER_ADDR', 'PET_MASTER_PORT', 'JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID', 'TPU_WORKER_ID', 'TPU_WORKER_HOSTNAMES']) && !e.name.startsWith('PROVENANT_'))";

/// `sha256:<64 lowercase hex>`, the only digest form provenant records.
pub const DIGEST_PATTERN: &str = "^sha256:[a-f0-9]{64}$";
/// A full git commit id: SHA-1 (40 hex) or SHA-256 (64 hex). Abbreviated ids are ambiguous and
/// so useless as provenance.
pub const COMMIT_PATTERN: &str = "^([a-f0-9]{40}|[a-f0-9]{64})$";
/// An OCI repository reference without tag or digest: optional `host[:port]/`, then lowercase
/// path components (the distribution reference grammar).
pub const REPOSITORY_PATTERN: &str = r"^(([a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*(:[0-9]+)?/)?[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$";
/// A DNS-1123 label: dataset names, accelerator type names.
pub const DNS_LABEL_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// A training run: one container image run on `replicas` worker pods on an accelerator pool,
/// whose materials are recorded and whose output model gets signed SLSA provenance.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "provenant.dev",
    version = "v1alpha1",
    kind = "TrainingRun",
    plural = "trainingruns",
    singular = "trainingrun",
    shortname = "tr",
    namespaced,
    status = "TrainingRunStatus",
    category = "provenant",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Accelerator", type_ = "string", json_path = ".spec.accelerator.type"),
    printcolumn(name = "Provenance", type_ = "string", json_path = ".status.provenance.state"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new(immutable::rule())
        .message("spec is immutable once the run has started (status.startTime is set), all but spec.suspend; create a new TrainingRun instead")
        .field_path(".spec")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("size(self.metadata.name) <= 48 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')")
        .message("metadata.name must be a DNS-1035 label (lowercase letters, digits and '-', starting with a letter) of at most 48 characters: it names the run's worker pods and rendezvous Service"),
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.volumeMounts) || self.volumeMounts.all(m, has(self.volumes) && self.volumes.exists(v, v.name == m.name))")
        .message("every volume mount must name a volume declared in spec.volumes")
        .field_path(".volumeMounts"),
)]
pub struct TrainingRunSpec {
    /// Container image of the training workload, e.g. `ghcr.io/acme/train@sha256:...`. Pin it by
    /// digest for reproducible runs; the digest actually run is recorded from the pods either way.
    #[schemars(length(min = 1, max = 512), pattern(r"^\S+$"))]
    pub image: String,

    /// Entrypoint override (the image's ENTRYPOINT when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 4096)))]
    pub command: Vec<String>,

    /// Arguments to the entrypoint (the image's CMD when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(max = 4096)))]
    pub args: Vec<String>,

    /// Distributed-training environment provenant gives every worker: `pytorch` (the default:
    /// `MASTER_ADDR`, `MASTER_PORT`, `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `NNODES`, `NODE_RANK`,
    /// `PET_*`), `jax` (`JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`) or
    /// `none`. Multi-host TPU runs also get `TPU_WORKER_ID` and `TPU_WORKER_HOSTNAMES` whatever
    /// the framework. Recorded in the provenance (`internalParameters.rendezvous`).
    #[serde(default, skip_serializing_if = "Framework::is_default")]
    pub framework: Framework,

    /// Extra environment of the training container. Every `PROVENANT_*` variable and every name
    /// provenant may set for `framework` (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, LOCAL_RANK,
    /// NNODES, NODE_RANK, PET_NNODES, PET_NODE_RANK, PET_MASTER_ADDR, PET_MASTER_PORT,
    /// JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID, TPU_WORKER_ID,
    /// TPU_WORKER_HOSTNAMES) are set by provenant and may not be given here, whatever the
    /// framework.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    #[x_kube(
        validation = Rule::new(RESERVED_ENV_RULE)
            .message("RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, LOCAL_RANK, NNODES, NODE_RANK, PET_NNODES, PET_NODE_RANK, PET_MASTER_ADDR, PET_MASTER_PORT, JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID, TPU_WORKER_ID, TPU_WORKER_HOSTNAMES and PROVENANT_* variables are set by provenant and cannot be overridden"),
    )]
    pub env: Vec<EnvVar>,

    /// Number of worker pods (1 to 1024). Each gets `RANK` and `WORLD_SIZE`; with more than one,
    /// a headless Service gives them `MASTER_ADDR`/`MASTER_PORT` for rendezvous.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = MAX_REPLICAS))]
    pub replicas: i32,

    /// What a failed worker does to the run: restart all the workers as a new attempt (up to
    /// `maxRestarts` times), or fail it. Omitted: the first failure fails the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_policy: Option<FailurePolicy>,

    /// Accelerators per worker. Omit it for a CPU-only run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accelerator: Option<AcceleratorRequest>,

    /// Hyperparameters, a free-form JSON object, kept as the API server stores it (numbers
    /// normalised: `1.0` is stored as `1`; give a value as a string to keep its spelling). Passed
    /// to every worker as `PROVENANT_HYPERPARAMETERS` (JSON) and recorded in the provenance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub hyperparameters: Option<serde_json::Map<String, serde_json::Value>>,

    /// Random seed of the run (non-negative), passed as `PROVENANT_SEED` and recorded in the
    /// provenance: with the materials it is what makes a run repeatable.
    #[schemars(range(min = 0))]
    pub seed: i64,

    /// Datasets the run reads. A declared `digest` is recorded as declared; a workload may report
    /// digests of what it actually read (see docs/workload-report.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    #[x_kube(
        validation = Rule::new("self.all(d, self.exists_one(e, e.name == d.name))")
            .message("dataset names must be unique")
            .reason(Reason::FieldValueDuplicate),
    )]
    pub datasets: Vec<DatasetRef>,

    /// The model this run starts from (fine-tuning), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_model: Option<BaseModelRef>,

    /// The training code, if it is not baked into the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<CodeRef>,

    /// Where the run may publish its model.
    pub output: OutputSpec,

    /// Service account of the worker pods (the namespace's `default` when omitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub service_account_name: Option<String>,

    /// Extra node selector for the workers, merged with the accelerator profile's selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 64))]
    pub node_selector: Option<BTreeMap<String, String>>,

    /// Labels, annotations, affinity and topology spread constraints added to every worker pod
    /// (a subset of a pod template). Recorded in the provenance (`internalParameters.scheduling`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodTemplate>,

    /// Extra tolerations for the workers, added to the accelerator profile's tolerations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub tolerations: Option<Vec<Toleration>>,

    /// PriorityClass of the worker pods (a DNS subdomain of at most 253 characters). The API
    /// server refuses pods naming a PriorityClass that does not exist: the run then fails with
    /// reason `PriorityClassNotFound`. Kueue orders and preempts queued runs by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub priority_class_name: Option<String>,

    /// Kueue LocalQueue (in the run's namespace) that admits the run: its workers are created
    /// as one Kueue pod group, gated until Kueue admits all of them together. A DNS subdomain of
    /// at most 63 characters (it becomes the pods' `kueue.x-k8s.io/queue-name` label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub queue_name: Option<String>,

    /// Volumes of the worker pods (datasets on PVCs, caches, shared memory): at most 64, each
    /// name a DNS label (as Kubernetes requires of volume names). hostPath is refused; the
    /// controller's configuration lists the other types allowed (`workers.allowedVolumeTypes`,
    /// by default those Pod Security `restricted` allows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), transform = names_are_dns_labels)]
    #[x_kube(
        validation = Rule::new("self.all(v, !has(v.hostPath))")
            .message("hostPath volumes are not allowed: a worker must not reach its node's file system")
            .reason(Reason::FieldValueForbidden),
    )]
    pub volumes: Option<Vec<Volume>>,

    /// Mounts of `volumes` into the training container: at most 64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), transform = names_are_dns_labels)]
    pub volume_mounts: Option<Vec<VolumeMount>>,

    /// CPU/memory requests and limits of the training container. Accelerator resources come from
    /// `accelerator` and its profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Mount the service account's API token into the workers. Off by default: a training
    /// workload rarely needs the Kubernetes API, and a token it does not have cannot leak.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub automount_service_account_token: bool,

    /// Run the workers with `runAsNonRoot: true` (the kubelet then refuses an image whose user
    /// is root). Needed in namespaces that enforce Pod Security `restricted`; off by default
    /// because most training images run as root.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub run_as_non_root: bool,

    /// Wall-clock limit of the run in seconds, from the first worker's creation; the run fails
    /// with reason `DeadlineExceeded` past it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub active_deadline_seconds: Option<i64>,

    /// Suspend the run: while true no worker pod exists. A run created suspended gets no pods
    /// and no `status.startTime` until resumed; suspending a running run stops its workers (the
    /// attempt ends `Suspended`, not counted against `failurePolicy.maxRestarts`) and resuming
    /// starts all of them again as a new attempt. The only field that may change once the run
    /// has started.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
}

fn default_replicas() -> i32 {
    1
}

/// Schema of `hyperparameters`: any JSON object, kept as the API server stores it.
fn free_form_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "description": "Hyperparameters, a free-form JSON object, kept as the API server stores it (numbers normalised: `1.0` is stored as `1`; give a value as a string to keep its spelling). Passed to every worker as `PROVENANT_HYPERPARAMETERS` (JSON) and recorded in the provenance.",
        "maxProperties": 256,
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// Bounds `items[].name` of a list of Kubernetes objects (volumes, volume mounts) to a DNS label:
/// Kubernetes refuses longer volume names anyway, and without a bound the API server's CEL cost
/// estimate of the mount rule (mounts × volumes × name length) exceeds its budget and it refuses
/// the whole CRD.
fn names_are_dns_labels(schema: &mut schemars::Schema) {
    if let Some(name) = schema
        .pointer_mut("/items/properties/name")
        .and_then(serde_json::Value::as_object_mut)
    {
        name.insert("maxLength".into(), 63.into());
    }
}

/// Accelerators each worker needs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AcceleratorRequest {
    /// Accelerator type: the name of an accelerator profile in the controller's configuration
    /// (for example `nvidia-a100-80gb`, `nvidia-l4`, `tpu-v5e`). The profile says which nodes
    /// carry it, which extended resource to request and which taints to tolerate.
    #[serde(rename = "type")]
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub type_: String,

    /// Accelerators per worker (1 to 64): GPUs, or TPU chips per host.
    #[serde(default = "default_accelerator_count")]
    #[schemars(range(min = 1, max = 64))]
    pub count: i32,

    /// TPU slice topology, for example `2x4` or `4x4x4`. Only for profiles that select a
    /// topology (GKE TPU); the controller rejects it for other profiles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), pattern(r"^[1-9][0-9]*(x[1-9][0-9]*){1,2}$"))]
    pub topology: Option<String>,
}

fn default_accelerator_count() -> i32 {
    1
}

/// A dataset the run reads.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatasetRef {
    /// Name of the dataset within the run (a DNS label); workload reports refer to it by name.
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,

    /// Where it lives: `gs://...`, `s3://...`, `hf://...`, `oci://...`, `pvc://claim/path`, ...
    #[schemars(length(min = 1, max = 2048))]
    pub uri: String,

    /// Content digest, `sha256:<64 hex>`, when known before the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 71), pattern(r"^sha256:[a-f0-9]{64}$"))]
    pub digest: Option<String>,

    /// The dataset's license as the submitter declares it: an SPDX license expression
    /// (`CC-BY-4.0`, `Apache-2.0 OR MIT`, `LicenseRef-acme-internal`, `NOASSERTION`). Recorded
    /// verbatim as declared (`annotations.declaredLicense`); provenant does not check it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 256),
        pattern(r"^[A-Za-z0-9.+:()-]+( [A-Za-z0-9.+:()-]+)*$")
    )]
    pub license: Option<String>,
}

/// The model a run starts from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BaseModelRef {
    /// Where the base model lives (an OCI reference, `hf://...`, `gs://...`).
    #[schemars(length(min = 1, max = 2048))]
    pub uri: String,

    /// Content digest, `sha256:<64 hex>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 71), pattern(r"^sha256:[a-f0-9]{64}$"))]
    pub digest: Option<String>,
}

/// The training code.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CodeRef {
    /// Repository URL, e.g. `https://github.com/acme/train`.
    #[schemars(length(min = 1, max = 2048))]
    pub uri: String,

    /// Full commit id (40 or 64 lowercase hex characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), pattern(r"^([a-f0-9]{40}|[a-f0-9]{64})$"))]
    pub revision: Option<String>,
}

/// Where the run may publish.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutputSpec {
    /// OCI repository the run may publish its model to, without tag or digest, e.g.
    /// `registry.example.com/models/resnet`. Outputs reported anywhere else are rejected.
    #[x_kube(
        validation = Rule::new("!self.contains('@') && !self.matches(':[^/]*$')")
            .message("must be a repository without tag or digest (e.g. registry.example.com/models/resnet): the model's digest is recorded from the run"),
    )]
    #[schemars(length(min = 1, max = 255), pattern(r"^(([a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*(:[0-9]+)?/)?[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$"))]
    pub repository: String,
}

pub mod compact;
mod failure;
pub mod immutable;
mod materials;
pub mod numbers;
mod pod_template;
mod pods;
pub mod revocation;
mod status;
pub mod validation;
pub mod volumes;

pub use failure::{
    Attempt, FailurePolicy, MAX_ATTEMPTS, MAX_RECORDED_PODS, MAX_RESTARTS, MAX_SUSPENSIONS,
    SUSPENDED, Suspension,
};
pub use materials::{DatasetMaterial, ImageMaterial, Materials, OutputRecord};
pub use pod_template::{
    Framework, MetadataKind, PodTemplate, PodTemplateMetadata, PodTemplatePlacement, reserved_key,
};
pub use pods::{CreatedPod, images};
pub use revocation::{
    AffectedModel, AffectedRun, MaterialRevocation, MaterialRevocationSpec,
    MaterialRevocationStatus, MaterialType, PathStep, RevokedMaterial,
};
pub use status::{
    AcceleratorFacts, ContainerRecord, NamedDigest, Phase, ProvenanceState, ProvenanceStatus,
    ReportRecord, Source, TrainingRunStatus, WorkerRecord,
};

#[cfg(test)]
mod reserved_env_tests {
    use super::*;

    #[test]
    fn the_cel_rule_refuses_exactly_the_reserved_names() {
        let quoted: Vec<String> = RESERVED_ENV.iter().map(|n| format!("'{n}'")).collect();
        assert!(
            RESERVED_ENV_RULE.contains(&format!("[{}]", quoted.join(", "))),
            "RESERVED_ENV_RULE is out of step with RESERVED_ENV"
        );
    }
}
