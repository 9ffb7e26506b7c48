//! Execute: the worker pods and the rendezvous Service of a run, built from its spec and its
//! accelerator placement. Pure functions: the reconciler only creates what these return.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, EnvVar, Pod, PodSpec, ResourceRequirements, Service, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::api::TrainingRun;
pub mod attempt;
pub mod placement;
pub mod pod_template;
pub mod queueing;
pub mod rendezvous;
pub mod security;

use crate::config::ControllerConfig;
use crate::labels;
pub use placement::{AcceleratorError, Placement, placement};
pub use rendezvous::{Rendezvous, rendezvous, worker_hostname};
pub use security::{VolumeNotAllowed, WorkerSecurity, check_volumes, worker_security};

/// What to create for a run.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerPlan {
    /// One pod per rank, in rank order.
    pub pods: Vec<Pod>,
    /// The headless rendezvous Service, for runs with more than one worker.
    pub service: Option<Service>,
}

/// The run cannot be turned into pods. Each message names the spec field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Accelerator(#[from] AcceleratorError),
    #[error(
        "spec.nodeSelector.{key}: {value:?} conflicts with {profile_value:?} required by the accelerator profile"
    )]
    NodeSelectorConflict {
        key: String,
        value: String,
        profile_value: String,
    },
    #[error(
        "spec.resources: {resource} comes from spec.accelerator; remove it from spec.resources"
    )]
    ResourceConflict { resource: String },
    #[error("{field}: {key:?} cannot be given: {reason}")]
    ReservedPodKey {
        field: &'static str,
        key: String,
        reason: &'static str,
    },
    #[error("spec.env: {name} is set by provenant and cannot be overridden")]
    ReservedEnv { name: String },
    #[error("the run has no {0} yet (not read from the API server?)")]
    MissingMetadata(&'static str),
}

impl PlanError {
    /// Condition reason for this failure (CamelCase, stable).
    pub fn reason(&self) -> &'static str {
        match self {
            PlanError::Accelerator(AcceleratorError::Unknown { .. }) => "UnknownAccelerator",
            PlanError::Accelerator(_) => "InvalidAcceleratorTopology",
            PlanError::NodeSelectorConflict { .. } => "NodeSelectorConflict",
            PlanError::ResourceConflict { .. } => "ResourceConflict",
            PlanError::ReservedPodKey { .. } | PlanError::ReservedEnv { .. } => "InvalidRun",
            PlanError::MissingMetadata(_) => "InvalidRun",
        }
    }
}

/// Deterministic name of a worker pod: `<run>-<rank>`.
pub fn worker_pod_name(run_name: &str, rank: i32) -> String {
    format!("{run_name}-{rank}")
}

/// Labels that select a run's workers.
pub fn worker_selector(run: &TrainingRun) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::RUN.to_string(), run.name_any()),
        (labels::RUN_UID.to_string(), run.uid().unwrap_or_default()),
    ])
}

/// Build the pods (and Service) of `run`.
pub fn plan(run: &TrainingRun, config: &ControllerConfig) -> Result<WorkerPlan, PlanError> {
    let name = run
        .metadata
        .name
        .clone()
        .ok_or(PlanError::MissingMetadata("name"))?;
    let namespace = run
        .metadata
        .namespace
        .clone()
        .ok_or(PlanError::MissingMetadata("namespace"))?;
    let owner = run
        .controller_owner_ref(&())
        .ok_or(PlanError::MissingMetadata("uid"))?;
    let placement = placement(config, run.spec.accelerator.as_ref())?;
    pod_template::check(run.spec.pod_template.as_ref())?;
    check_env(&run.spec.env)?;
    let security = worker_security(&run.spec);
    let node_selector = merged_node_selector(&placement, run.spec.node_selector.as_ref())?;
    let resources = merged_resources(&placement, run.spec.resources.as_ref())?;
    let mut tolerations = placement.tolerations.clone();
    tolerations.extend(run.spec.tolerations.clone().unwrap_or_default());

    let replicas = run.spec.replicas.max(1);
    let distributed = replicas > 1;
    let rendezvous = rendezvous(&name, replicas, run.spec.framework, &placement);
    let hyperparameters =
        serde_json::to_string(&run.spec.hyperparameters.clone().unwrap_or_default())
            .unwrap_or_else(|_| "{}".to_string());

    let group = queueing::pod_group_name(&name, &owner.uid);
    let pods = (0..replicas)
        .map(|rank| {
            let pod_name = worker_pod_name(&name, rank);
            let mut pod_labels = worker_selector(run);
            pod_labels.insert(labels::RANK.into(), rank.to_string());
            pod_labels.insert(labels::MANAGED_BY.into(), labels::MANAGER.into());
            let mut env = rendezvous.env(rank);
            env.extend([
                env_var(labels::env::SEED, run.spec.seed.to_string()),
                env_var(labels::env::HYPERPARAMETERS, hyperparameters.clone()),
                env_var(
                    labels::env::OUTPUT_REPOSITORY,
                    run.spec.output.repository.clone(),
                ),
                env_var(labels::env::RUN_NAME, name.clone()),
                env_var(labels::env::REPORT_PATH, labels::REPORT_PATH.to_string()),
            ]);
            env.extend(run.spec.env.iter().cloned());
            let mut pod = Pod {
                metadata: ObjectMeta {
                    name: Some(pod_name.clone()),
                    namespace: Some(namespace.clone()),
                    labels: Some(pod_labels),
                    owner_references: Some(vec![owner.clone()]),
                    ..Default::default()
                },
                spec: Some(PodSpec {
                    // A worker that fails fails the run; Kubernetes must not retry it behind our back.
                    restart_policy: Some("Never".into()),
                    hostname: distributed.then(|| worker_hostname(&name, rank)),
                    subdomain: distributed.then(|| name.clone()),
                    service_account_name: run.spec.service_account_name.clone(),
                    automount_service_account_token: Some(security.automount_service_account_token),
                    security_context: Some(security.pod_security_context.clone()),
                    node_selector: (!node_selector.is_empty()).then(|| node_selector.clone()),
                    tolerations: (!tolerations.is_empty()).then(|| tolerations.clone()),
                    volumes: run.spec.volumes.clone(),
                    active_deadline_seconds: run.spec.active_deadline_seconds,
                    enable_service_links: Some(false),
                    containers: vec![Container {
                        name: labels::TRAINER_CONTAINER.into(),
                        image: Some(run.spec.image.clone()),
                        command: (!run.spec.command.is_empty()).then(|| run.spec.command.clone()),
                        args: (!run.spec.args.is_empty()).then(|| run.spec.args.clone()),
                        env: Some(env),
                        resources: resources.clone(),
                        volume_mounts: run.spec.volume_mounts.clone(),
                        security_context: Some(security.container_security_context.clone()),
                        // The termination message is the workload's report channel; logs are not a
                        // report, so never FallbackToLogsOnError.
                        termination_message_path: Some(labels::REPORT_PATH.into()),
                        termination_message_policy: Some("File".into()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                status: None,
            };
            pod_template::apply(run.spec.pod_template.as_ref(), &mut pod);
            queueing::apply(run, &group, replicas, &mut pod);
            pod
        })
        .collect();

    let service =
        distributed.then(|| rendezvous_service(run, &name, &namespace, owner.clone(), &rendezvous));
    Ok(WorkerPlan { pods, service })
}

fn rendezvous_service(
    run: &TrainingRun,
    name: &str,
    namespace: &str,
    owner: OwnerReference,
    rendezvous: &Rendezvous,
) -> Service {
    let mut svc_labels = worker_selector(run);
    svc_labels.insert(labels::MANAGED_BY.into(), labels::MANAGER.into());
    Service {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(svc_labels),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(worker_selector(run)),
            // Workers rendezvous before any of them is ready.
            publish_not_ready_addresses: Some(true),
            ports: Some(vec![rendezvous.service_port()]),
            ..Default::default()
        }),
        status: None,
    }
}

/// The CRD refuses these names; a run stored before a name was reserved is refused here, or the
/// workload would see its own value instead of the recorded one (the last duplicate wins).
fn check_env(env: &[EnvVar]) -> Result<(), PlanError> {
    match env.iter().find(|e| {
        crate::api::RESERVED_ENV.contains(&e.name.as_str())
            || e.name.starts_with(crate::api::RESERVED_ENV_PREFIX)
    }) {
        Some(e) => Err(PlanError::ReservedEnv {
            name: e.name.clone(),
        }),
        None => Ok(()),
    }
}

fn env_var(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value),
        value_from: None,
    }
}

fn merged_node_selector(
    placement: &Placement,
    extra: Option<&BTreeMap<String, String>>,
) -> Result<BTreeMap<String, String>, PlanError> {
    let mut merged = placement.node_selector.clone();
    for (key, value) in extra.into_iter().flatten() {
        match merged.get(key) {
            Some(existing) if existing != value => {
                return Err(PlanError::NodeSelectorConflict {
                    key: key.clone(),
                    value: value.clone(),
                    profile_value: existing.clone(),
                });
            }
            _ => {
                merged.insert(key.clone(), value.clone());
            }
        }
    }
    Ok(merged)
}

/// The run's CPU/memory plus the accelerator as both request and limit (extended resources cannot
/// be overcommitted, so Kubernetes requires them equal).
fn merged_resources(
    placement: &Placement,
    extra: Option<&ResourceRequirements>,
) -> Result<Option<ResourceRequirements>, PlanError> {
    let mut resources = extra.cloned().unwrap_or_default();
    if let Some((resource, count)) = &placement.resource {
        let set_by_user = [&resources.requests, &resources.limits]
            .iter()
            .any(|m| m.as_ref().is_some_and(|m| m.contains_key(resource)));
        if set_by_user {
            return Err(PlanError::ResourceConflict {
                resource: resource.clone(),
            });
        }
        let quantity = Quantity(count.to_string());
        resources
            .requests
            .get_or_insert_with(BTreeMap::new)
            .insert(resource.clone(), quantity.clone());
        resources
            .limits
            .get_or_insert_with(BTreeMap::new)
            .insert(resource.clone(), quantity);
    }
    let empty =
        resources.requests.is_none() && resources.limits.is_none() && resources.claims.is_none();
    Ok((!empty).then_some(resources))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AcceleratorRequest, TrainingRunSpec};

    fn run(yaml_spec: &str) -> TrainingRun {
        let spec: TrainingRunSpec = serde_saphyr::from_str(yaml_spec).unwrap();
        let mut run = TrainingRun::new("bert", spec);
        run.metadata.namespace = Some("ml".into());
        run.metadata.uid = Some("uid-1".into());
        run
    }

    const BASE: &str =
        "image: reg.io/train@sha256:aa\nseed: 42\noutput: {repository: reg.io/models/bert}\n";

    fn env_of(pod: &Pod) -> BTreeMap<String, String> {
        pod.spec.as_ref().unwrap().containers[0]
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
            .collect()
    }

    #[test]
    fn four_gpu_workers_with_rank_env_selectors_and_resources() {
        let mut r = run(&format!(
            "{BASE}replicas: 4\naccelerator: {{type: nvidia-a100-80gb, count: 8}}\nhyperparameters: {{lr: 0.1, layers: [1, 2]}}\nenv: [{{name: NCCL_DEBUG, value: INFO}}]\nnodeSelector: {{pool: train}}\n"
        ));
        r.spec.accelerator = Some(AcceleratorRequest {
            type_: "nvidia-a100-80gb".into(),
            count: 8,
            topology: None,
        });
        let plan = plan(&r, &ControllerConfig::defaults()).unwrap();
        assert_eq!(plan.pods.len(), 4);
        for (rank, pod) in plan.pods.iter().enumerate() {
            assert_eq!(
                pod.metadata.name.as_deref(),
                Some(format!("bert-{rank}").as_str())
            );
            let labels = pod.metadata.labels.as_ref().unwrap();
            assert_eq!(labels[labels::RANK], rank.to_string());
            assert_eq!(labels[labels::RUN_UID], "uid-1");
            let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
            assert_eq!(
                (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
                ("TrainingRun", "uid-1", Some(true))
            );
            let spec = pod.spec.as_ref().unwrap();
            assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
            assert_eq!(spec.subdomain.as_deref(), Some("bert"));
            let selector = spec.node_selector.as_ref().unwrap();
            assert_eq!(selector["nvidia.com/gpu.product"], "NVIDIA-A100-SXM4-80GB");
            assert_eq!(selector["pool"], "train");
            assert_eq!(
                spec.tolerations.as_ref().unwrap()[0].key.as_deref(),
                Some("nvidia.com/gpu")
            );
            let c = &spec.containers[0];
            assert_eq!(c.termination_message_policy.as_deref(), Some("File"));
            let res = c.resources.as_ref().unwrap();
            assert_eq!(
                res.requests.as_ref().unwrap()["nvidia.com/gpu"],
                Quantity("8".into())
            );
            assert_eq!(
                res.limits.as_ref().unwrap()["nvidia.com/gpu"],
                Quantity("8".into())
            );
            let env = env_of(pod);
            assert_eq!(env["RANK"], rank.to_string());
            assert_eq!(env["WORLD_SIZE"], "4");
            assert_eq!(env["MASTER_ADDR"], "bert-0.bert");
            assert_eq!(env["MASTER_PORT"], "29500");
            assert_eq!(env["PROVENANT_SEED"], "42");
            let hp: serde_json::Value =
                serde_json::from_str(&env["PROVENANT_HYPERPARAMETERS"]).unwrap();
            assert_eq!(hp, serde_json::json!({"lr": 0.1, "layers": [1, 2]}));
            assert_eq!(env["NCCL_DEBUG"], "INFO");
            // Pods never mount anything the run did not ask for (no signing material).
            assert!(spec.volumes.is_none() && c.volume_mounts.is_none());
        }
        let svc = plan.service.unwrap();
        let spec = svc.spec.unwrap();
        assert_eq!(svc.metadata.name.as_deref(), Some("bert"));
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.selector.unwrap()[labels::RUN_UID], "uid-1");
    }

    #[test]
    fn single_cpu_worker_has_no_service_and_no_accelerator() {
        let plan = plan(&run(BASE), &ControllerConfig::defaults()).unwrap();
        assert_eq!(plan.pods.len(), 1);
        assert!(plan.service.is_none());
        let spec = plan.pods[0].spec.as_ref().unwrap();
        assert!(spec.node_selector.is_none() && spec.tolerations.is_none());
        assert!(spec.containers[0].resources.is_none());
        assert_eq!(env_of(&plan.pods[0])["MASTER_ADDR"], "localhost");
        assert_eq!(env_of(&plan.pods[0])["PROVENANT_HYPERPARAMETERS"], "{}");
        // No token and no privileges unless the spec asks (issue 14).
        assert_eq!(spec.automount_service_account_token, Some(false));
        let pod_sc = spec.security_context.as_ref().unwrap();
        assert_eq!(
            pod_sc.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        assert_eq!(pod_sc.run_as_non_root, None);
        let sc = spec.containers[0].security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_string()][..])
        );

        let asked = run(&format!(
            "{BASE}automountServiceAccountToken: true\nrunAsNonRoot: true\n"
        ));
        let plan = super::plan(&asked, &ControllerConfig::defaults()).unwrap();
        let spec = plan.pods[0].spec.as_ref().unwrap();
        assert_eq!(spec.automount_service_account_token, Some(true));
        assert_eq!(
            spec.security_context.as_ref().unwrap().run_as_non_root,
            Some(true)
        );
    }

    #[test]
    fn tpu_topology_becomes_a_node_selector() {
        let r = run(&format!(
            "{BASE}replicas: 4\naccelerator: {{type: tpu-v5e, count: 4, topology: 4x4}}\n"
        ));
        let plan = plan(&r, &ControllerConfig::defaults()).unwrap();
        let selector = plan.pods[3]
            .spec
            .as_ref()
            .unwrap()
            .node_selector
            .clone()
            .unwrap();
        assert_eq!(selector["cloud.google.com/gke-tpu-topology"], "4x4");
        assert_eq!(
            selector["cloud.google.com/gke-tpu-accelerator"],
            "tpu-v5-lite-podslice"
        );
    }

    #[test]
    fn pod_template_and_jax_tpu_environment_reach_every_worker() {
        let r = run(&format!(
            "{BASE}replicas: 4\nframework: jax\naccelerator: {{type: tpu-v5e, count: 4, topology: 4x4}}\n\
             podTemplate:\n  metadata:\n    labels: {{team: llm}}\n    annotations: {{gke-gcsfuse/volumes: 'true'}}\n\
             \x20 spec:\n    topologySpreadConstraints: [{{maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule}}]\n"
        ));
        let plan = plan(&r, &ControllerConfig::defaults()).unwrap();
        for (rank, pod) in plan.pods.iter().enumerate() {
            let labels = pod.metadata.labels.as_ref().unwrap();
            assert_eq!(labels["team"], "llm");
            assert_eq!(labels[labels::RANK], rank.to_string());
            let annotations = pod.metadata.annotations.as_ref().unwrap();
            assert_eq!(annotations["gke-gcsfuse/volumes"], "true");
            let spec = pod.spec.as_ref().unwrap();
            assert_eq!(spec.topology_spread_constraints.as_ref().unwrap().len(), 1);
            assert_eq!(
                spec.hostname.as_deref(),
                Some(format!("bert-{rank}").as_str())
            );
            let env = env_of(pod);
            assert_eq!(env["JAX_PROCESS_ID"], rank.to_string());
            assert_eq!(env["TPU_WORKER_ID"], rank.to_string());
            assert_eq!(env["JAX_COORDINATOR_ADDRESS"], "bert-0.bert:8476");
            assert!(!env.contains_key("RANK") && !env.contains_key("MASTER_ADDR"));
        }
        let ports = plan.service.unwrap().spec.unwrap().ports.unwrap();
        assert_eq!(ports[0].port, rendezvous::JAX_COORDINATOR_PORT);
    }

    #[test]
    fn reserved_pod_keys_and_env_names_are_refused_naming_field_and_key() {
        for (extra, field, key) in [
            (
                "podTemplate: {metadata: {labels: {provenant.dev/rank: '9'}}}",
                "spec.podTemplate.metadata.labels",
                "provenant.dev/rank",
            ),
            (
                "podTemplate: {metadata: {annotations: {kueue.x-k8s.io/pod-group-total-count: '1'}}}",
                "spec.podTemplate.metadata.annotations",
                "use spec.queueName",
            ),
            (
                "podTemplate: {metadata: {annotations: {container.apparmor.security.beta.kubernetes.io/trainer: unconfined}}}",
                "spec.podTemplate.metadata.annotations",
                "workerSecurity",
            ),
            (
                "env: [{name: TPU_WORKER_ID, value: '3'}]",
                "spec.env",
                "TPU_WORKER_ID",
            ),
        ] {
            let err = plan(
                &run(&format!("{BASE}{extra}\n")),
                &ControllerConfig::defaults(),
            )
            .unwrap_err();
            assert_eq!(err.reason(), "InvalidRun");
            let text = err.to_string();
            assert!(text.starts_with(field) && text.contains(key), "{text}");
        }
    }

    #[test]
    fn conflicts_name_the_field() {
        let r = run(&format!(
            "{BASE}accelerator: {{type: nvidia-l4}}\nnodeSelector: {{nvidia.com/gpu.product: Tesla-T4}}\n"
        ));
        let err = plan(&r, &ControllerConfig::defaults()).unwrap_err();
        assert_eq!(err.reason(), "NodeSelectorConflict");
        assert!(
            err.to_string()
                .starts_with("spec.nodeSelector.nvidia.com/gpu.product"),
            "{err}"
        );

        let r = run(&format!(
            "{BASE}accelerator: {{type: nvidia-l4}}\nresources: {{limits: {{nvidia.com/gpu: 2}}}}\n"
        ));
        let err = plan(&r, &ControllerConfig::defaults()).unwrap_err();
        assert_eq!(err.reason(), "ResourceConflict");

        let r = run(&format!("{BASE}accelerator: {{type: amd-mi300}}\n"));
        let err = plan(&r, &ControllerConfig::defaults()).unwrap_err();
        assert_eq!(err.reason(), "UnknownAccelerator");
    }
}
