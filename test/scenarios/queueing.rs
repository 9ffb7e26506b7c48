//! Issue 18, point 1: priority, Kueue queueing and gangs, against the real Kueue (v0.17.0,
//! `provenant_testbed::kueue`) on the real control plane. A run with `spec.queueName` creates its
//! workers as one Kueue pod group behind Kueue's admission gate: Kueue admits all of them when its
//! ClusterQueue has quota for all, or none; the kubelet simulator never binds a gated pod.

use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use provenant::api::{Phase, ProvenanceState, TrainingRun};
use provenant::execute::queueing::{
    ADMISSION_GATE, POD_GROUP_NAME_LABEL, POD_GROUP_TOTAL_COUNT_ANNOTATION, QUEUE_NAME_LABEL,
    pod_group_name,
};
use provenant_testbed::cluster::{Cluster, ControllerProcess, eventually};
use provenant_testbed::kubelet::{KubeletSim, PodOutcome, Scenario, SimNode};
use provenant_testbed::kueue;
use serde_json::{Value, json};

use crate::provenance::{World, pushing_model};
use crate::support::*;

/// How long each simulated worker trains: long enough to see the second run held back.
const TRAINING: Duration = Duration::from_secs(6);

fn kueue_api(cluster: &Cluster, kind: &str, plural: &str, namespaced: bool) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("kueue.x-k8s.io", "v1beta2", kind);
    let resource = ApiResource::from_gvk_with_plural(&gvk, plural);
    if namespaced {
        Api::namespaced_with(cluster.client.clone(), &cluster.namespace, &resource)
    } else {
        Api::all_with(cluster.client.clone(), &resource)
    }
}

async fn apply(api: &Api<DynamicObject>, object: Value) -> Result<()> {
    let object: DynamicObject = serde_json::from_value(object)?;
    api.patch(
        &object.name_any(),
        &PatchParams::apply("provenant-tests").force(),
        &Patch::Apply(&object),
    )
    .await
    .with_context(|| format!("applying {}", object.name_any()))?;
    Ok(())
}

/// A ClusterQueue for the test namespace only with `gpus` of quota, and a LocalQueue `local`
/// pointing at it (the objects of config/samples/kueue, named per test).
async fn queue(cluster: &Cluster, local: &str, gpus: u32) -> Result<()> {
    let ns = &cluster.namespace;
    let flavor = format!("{ns}-gpu");
    let cluster_queue = format!("{ns}-{local}");
    apply(
        &kueue_api(cluster, "ResourceFlavor", "resourceflavors", false),
        json!({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor",
               "metadata": {"name": flavor}}),
    )
    .await?;
    apply(
        &kueue_api(cluster, "ClusterQueue", "clusterqueues", false),
        json!({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue",
               "metadata": {"name": cluster_queue},
               "spec": {
                   "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
                   "resourceGroups": [{
                       "coveredResources": ["nvidia.com/gpu"],
                       "flavors": [{"name": flavor, "resources": [
                           {"name": "nvidia.com/gpu", "nominalQuota": gpus}]}]}]}}),
    )
    .await?;
    apply(
        &kueue_api(cluster, "LocalQueue", "localqueues", true),
        json!({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
               "metadata": {"name": local, "namespace": ns},
               "spec": {"clusterQueue": cluster_queue}}),
    )
    .await
}

/// The world of a queueing test: the real control plane with the cluster's Kueue managing the
/// test namespace, a PriorityClass `<ns>-high`, and the controller. None (skipped) without a real
/// API server; Kueue's CRDs and webhooks are cluster-wide, so only the local control plane of
/// `hack/with-cluster.sh` gets them.
async fn queueing_world() -> Result<Option<(World, ControllerProcess)>> {
    let Some(world) = real_world().await? else {
        return Ok(None);
    };
    if !world.cluster.is_local_control_plane() {
        eprintln!(
            "skipped: Kueue is only installed on the local control plane (hack/with-cluster.sh)"
        );
        return Ok(None);
    }
    kueue::shared(world.cluster.kubeconfig()).await?;
    Api::<Namespace>::all(world.cluster.client.clone())
        .patch(
            &world.cluster.namespace,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {kueue::NAMESPACE_LABEL: "true"}}})),
        )
        .await?;
    let class = format!("{}-high", world.cluster.namespace);
    let priority: k8s_openapi::api::scheduling::v1::PriorityClass =
        serde_json::from_value(json!({"metadata": {"name": class}, "value": 1000}))?;
    Api::all(world.cluster.client.clone())
        .create(&PostParams::default(), &priority)
        .await?;
    let controller = world.controller("a").await?;
    Ok(Some((world, controller)))
}

/// A world on a real API server; None (skipped, with a note) on the double unless
/// `E2E_REQUIRE_REAL` says a real one is required.
async fn real_world() -> Result<Option<World>> {
    let world = World::start(true).await?;
    if world.cluster.is_real() {
        return Ok(Some(world));
    }
    if std::env::var_os("E2E_REQUIRE_REAL").is_some() {
        anyhow::bail!(
            "E2E_REQUIRE_REAL is set but E2E_KUBECONFIG is not: no real cluster to run on"
        );
    }
    eprintln!(
        "skipped: this scenario needs a real API server (E2E_KUBECONFIG; `make test` starts one)"
    );
    Ok(None)
}

/// GPU nodes with room for both runs at once (16 GPUs), so only Kueue can hold a run back; rank 0
/// of every run pushes a model tagged with the run's name and reports it.
async fn gpu_kubelet(world: &World) -> Result<KubeletSim> {
    gpu_kubelet_preempting(world, None).await
}

/// [`gpu_kubelet`], where the pod named `preempt` (if any) is preempted as a spot VM reclaimed.
async fn gpu_kubelet_preempting(world: &World, preempt: Option<&str>) -> Result<KubeletSim> {
    let preempt = preempt.map(str::to_string);
    let registry = world.registry.clone();
    let repository = world.repository();
    let scenario = Scenario::new()
        .namespace(&world.cluster.namespace)
        .nodes(2, |i| {
            SimNode::nvidia(format!("gpu-{i}"), "NVIDIA-H100-80GB-HBM3", 8)
        })
        .outcome_fn(move |pod| {
            if preempt.as_deref() == Some(pod.name_any().as_str()) {
                return PodOutcome::preempted()
                    .after(Duration::from_millis(800))
                    .image_digest("trainer", IMAGE_DIGEST);
            }
            let labels = pod.labels();
            let run = labels.get("provenant.dev/run").cloned().unwrap_or_default();
            let outcome = PodOutcome::succeed()
                .after(TRAINING)
                .image_digest("trainer", IMAGE_DIGEST);
            if labels.get("provenant.dev/rank").is_none_or(|r| r != "0") {
                return outcome;
            }
            pushing_model(outcome, &registry, &repository, &run)
        });
    KubeletSim::start(world.cluster.client.clone(), scenario).await
}

/// A 4-worker run of 1 GPU each on `queue`, at the test's high priority.
fn queued_run(world: &World, name: &str, queue: &str) -> TrainingRun {
    let mut r = world.run(name);
    r.spec.replicas = 4;
    r.spec.datasets.clear();
    r.spec.accelerator = Some(provenant::api::AcceleratorRequest {
        type_: "nvidia-h100-80gb".into(),
        count: 1,
        topology: None,
    });
    r.spec.queue_name = Some(queue.into());
    r.spec.priority_class_name = Some(format!("{}-high", world.cluster.namespace));
    r
}

fn gated(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.scheduling_gates.as_ref())
        .is_some_and(|g| g.iter().any(|g| g.name == ADMISSION_GATE))
}

fn bound(pod: &Pod) -> bool {
    pod.spec.as_ref().is_some_and(|s| s.node_name.is_some())
}

/// The run's 4 pods, all created and all still gated (none bound); the run Pending, saying why.
async fn held_back(world: &World, name: &str, queue: &str) -> Result<Vec<Pod>> {
    let pods = eventually(TIMEOUT, &format!("the 4 gated pods of {name}"), || async {
        let pods = pods_of(&world.cluster, name).await?;
        Ok((pods.len() == 4 && pods.iter().all(gated)).then_some(pods))
    })
    .await?;
    let run = eventually(
        TIMEOUT,
        &format!("{name} waiting for admission"),
        || async {
            let run = world.cluster.api::<TrainingRun>().get(name).await?;
            let c = condition(&run, "Succeeded");
            Ok(c.filter(|c| c.1 == "WaitingForAdmission").map(|_| run))
        },
    )
    .await?;
    assert_eq!(
        run.status.as_ref().and_then(|s| s.phase),
        Some(Phase::Pending)
    );
    let (_, _, message) = condition(&run, "Succeeded").context("condition")?;
    assert!(
        message.starts_with(&format!(
            "4 of 4 workers waiting for admission by Kueue queue \"{queue}\""
        )),
        "{message}"
    );
    assert!(!pods.iter().any(bound), "a gated worker was bound");
    Ok(pods)
}

#[tokio::test]
async fn kueue_admits_each_run_whole_when_its_quota_fits() -> Result<()> {
    let Some((world, _controller)) = queueing_world().await? else {
        return Ok(());
    };
    let ns = world.cluster.namespace.clone();
    queue(&world.cluster, "team", 4).await?;
    let _sim = gpu_kubelet(&world).await?;

    let first = create(&world.cluster, &queued_run(&world, "first", "team")).await?;
    let running = wait_phase(&world.cluster, "first", Phase::Running).await?;
    // Admitted whole: all four gates removed by Kueue, all four bound.
    let pods = pods_of(&world.cluster, "first").await?;
    assert_eq!(pods.len(), 4);
    let group = pod_group_name("first", &first.uid().unwrap_or_default());
    for pod in &pods {
        assert!(!gated(pod) && bound(pod), "{}", pod.name_any());
        let spec = pod.spec.as_ref().context("spec")?;
        assert_eq!(
            spec.priority_class_name.as_deref(),
            Some(format!("{ns}-high").as_str())
        );
        assert_eq!(
            spec.priority,
            Some(1000),
            "the Priority admission plugin resolved it"
        );
        let labels = pod.labels();
        assert_eq!(labels[QUEUE_NAME_LABEL], "team");
        assert_eq!(labels[POD_GROUP_NAME_LABEL], group);
        assert_eq!(pod.annotations()[POD_GROUP_TOTAL_COUNT_ANNOTATION], "4");
        // Kueue's webhook took the pod in (its managed label), so Kueue's controller ungated it.
        assert_eq!(labels["kueue.x-k8s.io/managed"], "true");
    }
    let (_, reason, _) = condition(&running, "Succeeded").context("condition")?;
    assert_eq!(reason, "Running");

    // The second run's 4 GPUs do not fit next to the first's: held back whole, though the nodes
    // have room for it.
    let second = create(&world.cluster, &queued_run(&world, "second", "team")).await?;
    held_back(&world, "second", "team").await?;
    let first_pods = pods_of(&world.cluster, "first").await?;
    assert!(
        first_pods
            .iter()
            .all(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")),
        "the second run waits while the first is still training"
    );

    // When the first finishes, Kueue admits the second whole and it succeeds.
    world
        .wait_provenance("first", ProvenanceState::Attached)
        .await?;
    let done = world
        .wait_provenance("second", ProvenanceState::Attached)
        .await?;
    let pods = pods_of(&world.cluster, "second").await?;
    assert!(pods.iter().all(|p| !gated(p) && bound(p)));

    // The statement records the queue, the priority class and the pod group.
    let digest = World::model_digest(&done);
    let envelope: Value = serde_json::from_slice(&world.att_envelopes(&digest).await?[0])?;
    let payload = base64::engine::general_purpose::STANDARD
        .decode(envelope["payload"].as_str().context("payload")?)?;
    let statement: Value = serde_json::from_slice(&payload)?;
    let scheduling = &statement["predicate"]["buildDefinition"]["internalParameters"]["scheduling"];
    assert_eq!(scheduling["queueName"], "team");
    assert_eq!(scheduling["priorityClassName"], format!("{ns}-high"));
    assert_eq!(
        scheduling["kueuePodGroupName"],
        pod_group_name("second", &second.uid().unwrap_or_default())
    );
    Ok(())
}

#[tokio::test]
async fn kueue_never_admits_part_of_a_run() -> Result<()> {
    let Some((world, _controller)) = queueing_world().await? else {
        return Ok(());
    };
    queue(&world.cluster, "small", 3).await?;
    let _sim = gpu_kubelet(&world).await?;
    let run = create(&world.cluster, &queued_run(&world, "big", "small")).await?;
    held_back(&world, "big", "small").await?;
    // Kueue has seen the whole group (its Workload) and has no quota for it...
    let group = pod_group_name("big", &run.uid().unwrap_or_default());
    let workloads = kueue_api(&world.cluster, "Workload", "workloads", true);
    let workload = eventually(TIMEOUT, "the pod group's Workload", || async {
        Ok(workloads.get_opt(&group).await?)
    })
    .await?;
    let pod_sets = &workload.data["spec"]["podSets"];
    assert_eq!(pod_sets[0]["count"], 4, "{pod_sets}");
    // ...and, a while later, still none of the 3 that would fit is admitted.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pods = pods_of(&world.cluster, "big").await?;
    assert!(pods.iter().all(|p| gated(p) && !bound(p)));
    let workload = workloads.get(&group).await?;
    let admitted = workload.data["status"]["admission"].is_object();
    assert!(!admitted, "{}", workload.data["status"]);
    Ok(())
}

/// Without a Kueue watching the namespace the gate is never lifted: the run waits, saying for
/// what, and no worker runs.
#[tokio::test]
async fn without_kueue_a_queued_run_waits_and_says_why() -> Result<()> {
    let world = World::start(true).await?;
    let _controller = world.controller("a").await?;
    let _sim = gpu_kubelet(&world).await?;
    let mut r = queued_run(&world, "lonely", "team");
    r.spec.priority_class_name = None;
    create(&world.cluster, &r).await?;
    held_back(&world, "lonely", "team").await?;
    Ok(())
}

/// The Priority admission plugin refuses a pod naming a PriorityClass that does not exist: the
/// run fails at once, naming `spec.priorityClassName`, instead of retrying forever.
#[tokio::test]
async fn a_missing_priority_class_fails_the_run_naming_the_field() -> Result<()> {
    let Some(world) = real_world().await? else {
        return Ok(());
    };
    let _controller = world.controller("a").await?;
    let mut r = world.run("urgent");
    r.spec.priority_class_name = Some("no-such-class".into());
    create(&world.cluster, &r).await?;
    let failed = wait_phase(&world.cluster, "urgent", Phase::Failed).await?;
    let (_, reason, message) = condition(&failed, "Succeeded").context("condition")?;
    assert_eq!(reason, "PriorityClassNotFound");
    assert!(
        message
            .starts_with("spec.priorityClassName: PriorityClass \"no-such-class\" does not exist"),
        "{message}"
    );
    assert!(pods_of(&world.cluster, "urgent").await?.is_empty());
    Ok(())
}

/// The Kueue objects of config/samples/kueue (docs/operations.md) pass the API server's schema
/// checks of Kueue v0.17.0's CRDs and Kueue's own validating webhooks (a server-side dry run).
#[tokio::test]
async fn the_kueue_samples_are_accepted_by_kueue() -> Result<()> {
    let Some((world, _controller)) = queueing_world().await? else {
        return Ok(());
    };
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/samples/kueue/queues.yaml"
    );
    let objects: Vec<DynamicObject> = serde_saphyr::from_multiple(&std::fs::read_to_string(path)?)?;
    let mut kinds = Vec::new();
    for mut object in objects {
        let types = object.types.clone().context("apiVersion and kind")?;
        let (group, version) = types
            .api_version
            .split_once('/')
            .unwrap_or(("", &types.api_version));
        let gvk = GroupVersionKind::gvk(group, version, &types.kind);
        let plural = format!("{}s", types.kind.to_lowercase()).replace("classs", "classes");
        let resource = ApiResource::from_gvk_with_plural(&gvk, &plural);
        let api: Api<DynamicObject> = if object.metadata.namespace.is_some() {
            // The sample's team namespace is this test's.
            object.metadata.namespace = Some(world.cluster.namespace.clone());
            Api::namespaced_with(
                world.cluster.client.clone(),
                &world.cluster.namespace,
                &resource,
            )
        } else {
            Api::all_with(world.cluster.client.clone(), &resource)
        };
        api.create(
            &PostParams {
                dry_run: true,
                field_manager: None,
            },
            &object,
        )
        .await
        .with_context(|| format!("{} {} refused", types.kind, object.name_any()))?;
        kinds.push(types.kind);
    }
    assert_eq!(
        kinds,
        [
            "ResourceFlavor",
            "ClusterQueue",
            "LocalQueue",
            "PriorityClass"
        ]
    );

    Ok(())
}

/// A queued run preempted mid-run restarts (`failurePolicy`) as a new Kueue pod group: the first
/// attempt's group finishes and gives its quota back, the second is admitted whole by Kueue and
/// produces the model.
#[tokio::test]
async fn a_preempted_queued_run_restarts_as_a_new_kueue_group() -> Result<()> {
    let Some((world, _controller)) = queueing_world().await? else {
        return Ok(());
    };
    queue(&world.cluster, "spot", 4).await?;
    let _sim = gpu_kubelet_preempting(&world, Some("again-1")).await?;
    let mut r = queued_run(&world, "again", "spot");
    r.spec.failure_policy = serde_json::from_value(json!({"maxRestarts": 1}))?;
    let run = create(&world.cluster, &r).await?;
    let done = world
        .wait_provenance("again", ProvenanceState::Attached)
        .await?;
    let status = done.status.clone().context("status")?;
    assert_eq!(status.attempts.len(), 2, "{:?}", status.attempts);
    assert_eq!(status.attempts[0].reason.as_deref(), Some("WorkerEvicted"));
    assert_eq!(status.attempts[1].reason.as_deref(), Some("Succeeded"));

    let first = pod_group_name("again", &run.uid().unwrap_or_default());
    let second = format!("{first}-a1");
    let pods = pods_of(&world.cluster, "again").await?;
    let later: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.name_any().ends_with("-a1"))
        .collect();
    assert_eq!(later.len(), 4, "attempt 1 has its 4 workers");
    for pod in &later {
        assert_eq!(pod.labels()[POD_GROUP_NAME_LABEL], second);
        assert!(!gated(pod) && bound(pod), "{}", pod.name_any());
        assert_eq!(pod.labels()["kueue.x-k8s.io/managed"], "true");
    }
    // Kueue saw two Workloads: the first finished (its quota returned), the second admitted.
    let workloads = kueue_api(&world.cluster, "Workload", "workloads", true);
    let finished = |w: &DynamicObject| {
        w.data["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Finished" && c["status"] == "True")
        })
    };
    let old = eventually(TIMEOUT, "the first attempt's Workload finished", || async {
        let w = workloads.get(&first).await?;
        Ok(finished(&w).then_some(w))
    })
    .await?;
    assert!(
        old.data["status"]["admission"].is_object(),
        "{}",
        old.data["status"]
    );
    let new = workloads.get(&second).await?;
    assert!(
        new.data["status"]["admission"].is_object(),
        "{}",
        new.data["status"]
    );
    Ok(())
}
