//! Issue 13, way in 2: a tenant swaps a worker pod. Anyone with `edit` in the namespace can delete
//! a worker and create their own under its name (with the run's labels and owner reference), or
//! change a running worker's image. The controller used to count any such pod as a worker, adopt
//! it on a 409, and sign its output as if the declared spec had produced it. It now observes only
//! the pods it created (by UID), as it created them; anything else fails the run, unsigned.

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use provenant::api::{Phase, TrainingRun};
use provenant_testbed::cluster::{ControllerProcess, eventually};
use provenant_testbed::kubelet::KubeletSim;
use serde_json::json;

use crate::provenance::{MODEL_REPO, World};
use crate::support::*;

/// How long the simulated workers train: time for the tenant to act.
const TRAINING: Duration = Duration::from_secs(4);

/// The run fails with one of `reasons` and nothing is attached to any model it pushed.
async fn failed_unsigned(world: &World, name: &str, reasons: &[&str]) -> Result<TrainingRun> {
    let failed = wait_phase(&world.cluster, name, Phase::Failed).await?;
    let (_, reason, message) = condition(&failed, "Succeeded").context("Succeeded condition")?;
    assert!(reasons.contains(&reason.as_str()), "{reason}: {message}");
    let tags = world.registry.list_tags(MODEL_REPO).await?;
    assert!(
        !tags
            .iter()
            .any(|t| t.ends_with(".att") || t.ends_with(".sig")),
        "nothing signed: {tags:?}"
    );
    Ok(failed)
}

/// Wait for the controller's worker pod `name`, running.
async fn running_pod(world: &World, name: &str) -> Result<Pod> {
    let pods = world.cluster.api::<Pod>();
    eventually(TIMEOUT, &format!("pod {name} running"), || {
        let pods = pods.clone();
        async move {
            let pod = pods.get_opt(name).await?;
            Ok(pod
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")))
        }
    })
    .await
}

/// A one-worker run `bert` submitted and training, the controller running, and the tenant's client.
async fn one_worker_run() -> Result<(World, kube::Client, KubeletSim, ControllerProcess)> {
    let world = World::start(true).await?;
    let tenant = world.cluster.tenant().await?;
    let sim = world.kubelet_running(TRAINING, || {}).await?;
    let controller = world.controller("a").await?;
    let mut spec = world.run("bert");
    spec.spec.replicas = 1;
    spec.spec.accelerator = None;
    create(&world.cluster, &spec).await?;
    Ok((world, tenant, sim, controller))
}

#[tokio::test]
async fn a_worker_pod_swapped_by_a_tenant_fails_the_run_unsigned() -> Result<()> {
    let (world, tenant, sim, _controller) = one_worker_run().await?;
    let original = running_pod(&world, "bert-0").await?;

    // The tenant's pod: the controller's, with another command, under the same name.
    let mut theirs = original.clone();
    theirs.metadata = kube::api::ObjectMeta {
        name: original.metadata.name.clone(),
        labels: original.metadata.labels.clone(),
        annotations: original.metadata.annotations.clone(),
        owner_references: original.metadata.owner_references.clone(),
        ..Default::default()
    };
    theirs.status = None;
    let spec_mut = theirs.spec.as_mut().context("spec")?;
    spec_mut.node_name = None;
    spec_mut.containers[0].command =
        Some(vec!["sh".into(), "-c".into(), "train-on-anything".into()]);
    let pods = Api::<Pod>::namespaced(tenant, &world.cluster.namespace);
    // Delete the worker and put theirs in its place, racing the controller's re-create.
    let mut placed = false;
    for _ in 0..20 {
        match pods
            .delete("bert-0", &DeleteParams::default().grace_period(0))
            .await
        {
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(e) => return Err(e.into()),
        }
        match pods.create(&PostParams::default(), &theirs).await {
            Ok(_) => {
                placed = true;
                break;
            }
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    assert!(placed, "the tenant never got its pod in place");
    failed_unsigned(&world, "bert", &["WorkerTampered", "WorkerLost"]).await?;
    sim.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_running_workers_image_changed_by_a_tenant_fails_the_run_unsigned() -> Result<()> {
    let (world, tenant, sim, _controller) = one_worker_run().await?;
    running_pod(&world, "bert-0").await?;
    // `kubectl set image pod/bert-0 trainer=...`: allowed to a namespace editor.
    let pods = Api::<Pod>::namespaced(tenant, &world.cluster.namespace);
    let patch = json!({"spec": {"containers": [{"name": "trainer", "image": "registry.example.com/other:latest"}]}});
    pods.patch("bert-0", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .context("a namespace editor may change a pod's image")?;
    let failed = failed_unsigned(&world, "bert", &["WorkerTampered"]).await?;
    let (_, _, message) = condition(&failed, "Succeeded").context("condition")?;
    assert!(
        message.contains("bert-0") && message.contains("image"),
        "{message}"
    );
    sim.shutdown().await?;
    Ok(())
}
