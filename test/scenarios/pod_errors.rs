//! Issue 14 (4): pod creation errors are visible and bounded. A ResourceQuota, Pod Security
//! admission or an invalid pod used to abort the pass: the run stayed Pending with no condition,
//! the pods already created were forgotten (and then taken for someone else's), and the deadline
//! was never checked. Now a transient refusal (quota) is a condition and a Warning Event naming
//! the API's reason, retried with backoff under the deadline; a permanent one fails the run and
//! deletes the pods already created. All on the real API server (its quota and PodSecurity
//! admission).

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Namespace, Pod, ResourceQuota};
use kube::api::{Api, Patch, PatchParams, PostParams};
use provenant::api::{Phase, ProvenanceState, TrainingRun};
use provenant_testbed::cluster::{Cluster, eventually};
use serde_json::json;

use crate::provenance::World;
use crate::support::*;

/// A [`World`] on a real API server, or None (skipped, with `why` on stderr) on the double;
/// with `E2E_REQUIRE_REAL` set, the double is an error, as for [`Cluster::start_real`].
pub(crate) async fn real_world(why: &str) -> Result<Option<World>> {
    let world = World::start(true).await?;
    if world.cluster.is_real() {
        return Ok(Some(world));
    }
    anyhow::ensure!(
        std::env::var_os("E2E_REQUIRE_REAL").is_none(),
        "E2E_REQUIRE_REAL is set but this scenario got the double: {why}"
    );
    eprintln!("skipped: {why}");
    Ok(None)
}

/// A quota on the test namespace allowing `pods` pods, once the quota controller has counted the
/// namespace (before that, admission refuses every pod with "status unknown").
pub(crate) async fn pod_quota(cluster: &Cluster, pods: u32) -> Result<()> {
    let quotas = cluster.api::<ResourceQuota>();
    let quota: ResourceQuota = serde_json::from_value(json!({
        "metadata": {"name": "pods"},
        "spec": {"hard": {"pods": pods.to_string()}},
    }))?;
    quotas
        .patch(
            "pods",
            &PatchParams::apply("scenario").force(),
            &Patch::Apply(&quota),
        )
        .await?;
    let want = pods.to_string();
    eventually(TIMEOUT, "the quota to be counted", || {
        let quotas = quotas.clone();
        let want = want.clone();
        async move {
            let q = quotas.get("pods").await?;
            let hard = q
                .status
                .and_then(|s| s.hard)
                .and_then(|h| h.get("pods").cloned());
            Ok(hard.filter(|h| h.0 == want).map(|_| ()))
        }
    })
    .await
}

/// Label the test namespace to enforce a Pod Security level on new pods.
pub(crate) async fn enforce_pod_security(cluster: &Cluster, level: &str) -> Result<()> {
    let patch = json!({"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": level,
        "pod-security.kubernetes.io/enforce-version": "latest",
    }}});
    Api::<Namespace>::all(cluster.client.clone())
        .patch(
            &cluster.namespace,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .context("labelling the test namespace")?;
    // PodSecurity admission reads namespaces from an informer, so the label takes effect a moment
    // later: wait until a pod adding SYS_ADMIN (refused at every level above `privileged`) is
    // refused. (Not `privileged: true`: the test API server does not allow it at all.)
    let probe: Pod = serde_json::from_value(json!({
        "metadata": {"name": "pod-security-probe"},
        "spec": {"containers": [{"name": "c", "image": "busybox",
                                 "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}]},
    }))?;
    let pods = cluster.api::<Pod>();
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    eventually(
        TIMEOUT,
        &format!("Pod Security level {level} in force"),
        || {
            let (pods, probe, dry_run) = (pods.clone(), probe.clone(), dry_run.clone());
            async move {
                Ok(match pods.create(&dry_run, &probe).await {
                    Err(kube::Error::Api(e)) if e.message.contains("violates PodSecurity") => {
                        Some(())
                    }
                    _ => None,
                })
            }
        },
    )
    .await
}

/// The run's `Succeeded` condition once `pred` holds for it.
async fn wait_condition(
    cluster: &Cluster,
    name: &str,
    what: &str,
    pred: impl Fn(&(String, String, String)) -> bool + Clone,
) -> Result<(String, String, String)> {
    let api = cluster.api::<TrainingRun>();
    eventually(TIMEOUT, what, || {
        let api = api.clone();
        let pred = pred.clone();
        async move {
            let run = api.get(name).await?;
            Ok(condition(&run, "Succeeded").filter(|c| pred(c)))
        }
    })
    .await
}

/// No pod of the run is left (gone, or being deleted).
async fn no_pod_left(cluster: &Cluster, name: &str) -> Result<()> {
    eventually(TIMEOUT, "the run's pods to be deleted", || async {
        let pods = pods_of(cluster, name).await?;
        Ok(pods
            .iter()
            .all(|p| p.metadata.deletion_timestamp.is_some())
            .then_some(()))
    })
    .await
}

#[tokio::test]
async fn a_quota_that_admits_one_of_two_workers_is_retried_until_raised() -> Result<()> {
    let Some(world) = real_world("needs the real API server's quota admission").await? else {
        return Ok(());
    };
    pod_quota(&world.cluster, 1).await?;
    let sim = world
        .kubelet_running(Duration::from_millis(500), || {})
        .await?;
    let _controller = world.controller("a").await?;
    create(&world.cluster, &world.run("bert")).await?;

    let (status, reason, message) =
        wait_condition(&world.cluster, "bert", "a PodCreation condition", |c| {
            c.1.starts_with("PodCreation")
        })
        .await?;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("Unknown", "PodCreationForbidden"),
        "{message}"
    );
    assert!(
        message.contains("bert-1") && message.contains("exceeded quota"),
        "{message}"
    );
    warning_event(&world.cluster, "PodCreationForbidden", "exceeded quota").await?;
    let run = world.cluster.api::<TrainingRun>().get("bert").await?;
    assert_eq!(run.status.unwrap().phase, Some(Phase::Pending));
    let pods = pods_of(&world.cluster, "bert").await?;
    assert_eq!(pods.len(), 1, "the worker the quota admitted is kept");

    // The team raises its quota: the retry creates the second worker and the run goes on.
    pod_quota(&world.cluster, 2).await?;
    let done = wait_phase(&world.cluster, "bert", Phase::Succeeded).await?;
    assert_eq!(done.status.unwrap().workers.len(), 2);
    world
        .wait_provenance("bert", ProvenanceState::Attached)
        .await?;
    sim.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn the_deadline_ends_a_run_the_quota_keeps_waiting() -> Result<()> {
    let Some(world) = real_world("needs the real API server's quota admission").await? else {
        return Ok(());
    };
    pod_quota(&world.cluster, 1).await?;
    // No kubelet: the admitted worker stays unscheduled, holding its place in the quota.
    let _controller = world.controller("a").await?;
    let mut run = world.run("bert");
    run.spec.active_deadline_seconds = Some(6);
    create(&world.cluster, &run).await?;

    let failed = wait_phase(&world.cluster, "bert", Phase::Failed).await?;
    let (_, reason, message) = condition(&failed, "Succeeded").context("condition")?;
    assert_eq!(reason, "DeadlineExceeded", "{message}");
    no_pod_left(&world.cluster, "bert").await?;
    Ok(())
}

#[tokio::test]
async fn a_pod_security_rejection_fails_the_run_and_deletes_its_pods() -> Result<()> {
    let Some(world) = real_world("needs the real API server's PodSecurity admission").await? else {
        return Ok(());
    };
    // The quota first admits one worker and holds the other back...
    pod_quota(&world.cluster, 1).await?;
    let _controller = world.controller("a").await?;
    create(&world.cluster, &world.run("bert")).await?;
    wait_condition(&world.cluster, "bert", "the quota condition", |c| {
        c.2.contains("exceeded quota")
    })
    .await?;
    assert_eq!(pods_of(&world.cluster, "bert").await?.len(), 1);
    // ...then the namespace enforces `restricted`, which a run that runs as root cannot meet
    // (spec.runAsNonRoot unset): the second worker is refused for good.
    enforce_pod_security(&world.cluster, "restricted").await?;
    pod_quota(&world.cluster, 2).await?;

    let failed = wait_phase(&world.cluster, "bert", Phase::Failed).await?;
    let (_, reason, message) = condition(&failed, "Succeeded").context("condition")?;
    assert_eq!(reason, "PodCreationForbidden", "{message}");
    assert!(
        message.contains("bert-1") && message.contains("violates PodSecurity"),
        "{message}"
    );
    warning_event(
        &world.cluster,
        "PodCreationForbidden",
        "violates PodSecurity",
    )
    .await?;
    no_pod_left(&world.cluster, "bert").await?;
    Ok(())
}
