//! Issue 14 (3): worker pods are not a privilege escalation. They used to keep the service
//! account token, run with no security context (so Pod Security `restricted` refused them) and
//! mount any volume a tenant named, hostPath included. Now the token is mounted only when the spec
//! asks, every worker drops all capabilities, cannot gain privileges and runs under the runtime's
//! seccomp profile, and volumes are limited to the configuration's allowlist (hostPath never, by
//! the CRD). On the real API server, with its PodSecurity admission.

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use provenant::api::{Phase, ProvenanceState, TrainingRun};
use provenant_testbed::cluster::{Cluster, eventually};
use serde_json::{Value, json};

use crate::pod_errors::{enforce_pod_security, real_world};
use crate::provenance::World;
use crate::support::*;

/// Create a run from JSON as `client` (fields the typed spec may not know are sent as written).
async fn create_as(
    client: kube::Client,
    cluster: &Cluster,
    mut run: Value,
) -> Result<(), kube::Error> {
    run["apiVersion"] = json!("provenant.dev/v1alpha1");
    run["kind"] = json!("TrainingRun");
    let resource = ApiResource::erase::<TrainingRun>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client, &cluster.namespace, &resource);
    let object: DynamicObject = serde_json::from_value(run).expect("a TrainingRun object");
    api.create(&PostParams::default(), &object)
        .await
        .map(|_| ())
}

/// A tenant of the test namespace (`edit`, which the shipped `provenant-edit` aggregated role
/// extends to TrainingRuns).
async fn run_submitter(cluster: &Cluster) -> Result<kube::Client> {
    let tenant = cluster.tenant().await?;
    let runs = Api::<TrainingRun>::namespaced(tenant.clone(), &cluster.namespace);
    eventually(TIMEOUT, "the tenant's TrainingRun role to apply", || {
        let runs = runs.clone();
        async move { Ok(runs.list(&Default::default()).await.ok().map(|_| ())) }
    })
    .await?;
    Ok(tenant)
}

/// The worker pods of a run, as the API server stored them.
async fn stored_pods(world: &World, name: &str) -> Result<Vec<Pod>> {
    let pods = pods_of(&world.cluster, name).await?;
    anyhow::ensure!(!pods.is_empty(), "no worker pods of {name}");
    Ok(pods)
}

/// What a worker pod must look like under the defaults: no token, no privileges.
fn assert_hardened(pod: &Pod) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let spec = pod.spec.as_ref().expect("spec");
    assert_eq!(spec.automount_service_account_token, Some(false), "{name}");
    // The ServiceAccount admission adds a `kube-api-access-*` volume to pods that automount.
    let volumes: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    assert!(
        !volumes.iter().any(|v| v.starts_with("kube-api-access")),
        "{name} mounts a service account token: {volumes:?}"
    );
    let seccomp = spec
        .security_context
        .as_ref()
        .and_then(|s| s.seccomp_profile.as_ref())
        .map(|s| s.type_.as_str());
    assert_eq!(seccomp, Some("RuntimeDefault"), "{name}");
    let sc = spec.containers[0]
        .security_context
        .as_ref()
        .expect("container securityContext");
    assert_eq!(sc.allow_privilege_escalation, Some(false), "{name}");
    let drop = sc.capabilities.as_ref().and_then(|c| c.drop.clone());
    assert_eq!(drop, Some(vec!["ALL".to_string()]), "{name}");
}

#[tokio::test]
async fn workers_run_in_a_restricted_namespace() -> Result<()> {
    let Some(world) = real_world("needs the real API server's PodSecurity admission").await? else {
        return Ok(());
    };
    enforce_pod_security(&world.cluster, "restricted").await?;
    let sim = world.kubelet(|| {}).await?;
    let _controller = world.controller("a").await?;
    let mut run = serde_json::to_value(world.run("bert"))?;
    // `restricted` wants a non-root user; images that run as root are not forced to (the default).
    run["spec"]["runAsNonRoot"] = json!(true);
    create_as(world.cluster.client.clone(), &world.cluster, run).await?;

    wait_phase(&world.cluster, "bert", Phase::Succeeded).await?;
    world
        .wait_provenance("bert", ProvenanceState::Attached)
        .await?;
    for pod in stored_pods(&world, "bert").await? {
        assert_hardened(&pod);
        let non_root = pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.as_ref())
            .and_then(|s| s.run_as_non_root);
        assert_eq!(non_root, Some(true));
    }
    sim.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn workers_run_in_a_baseline_namespace_without_the_service_account_token() -> Result<()> {
    let Some(world) = real_world("needs the real API server's admission plugins").await? else {
        return Ok(());
    };
    enforce_pod_security(&world.cluster, "baseline").await?;
    let sim = world.kubelet(|| {}).await?;
    let _controller = world.controller("a").await?;
    create(&world.cluster, &world.run("bert")).await?;

    wait_phase(&world.cluster, "bert", Phase::Succeeded).await?;
    world
        .wait_provenance("bert", ProvenanceState::Attached)
        .await?;
    for pod in stored_pods(&world, "bert").await? {
        assert_hardened(&pod);
        // Images that run as root keep working outside `restricted`.
        let non_root = pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.as_ref())
            .and_then(|s| s.run_as_non_root);
        assert_eq!(non_root, None);
    }
    sim.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_tenant_cannot_give_workers_a_host_path() -> Result<()> {
    let Some(cluster) = Cluster::start_real().await? else {
        return Ok(());
    };
    let tenant = run_submitter(&cluster).await?;
    let mut run = serde_json::to_value(crate::support::run(
        "hostile",
        json!({
            "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
            "volumeMounts": [{"name": "root", "mountPath": "/host"}],
        }),
    ))?;
    run["metadata"]["namespace"] = json!(cluster.namespace);
    let err = create_as(tenant, &cluster, run)
        .await
        .expect_err("a run with a hostPath volume must be refused");
    let kube::Error::Api(status) = err else {
        panic!("not an API refusal: {err}");
    };
    assert_eq!(status.code, 422, "{}", status.message);
    assert!(
        status.message.contains("spec.volumes") && status.message.contains("hostPath"),
        "{}",
        status.message
    );
    Ok(())
}

#[tokio::test]
async fn a_volume_type_outside_the_allowlist_is_refused_before_any_pod() -> Result<()> {
    let world = World::start(true).await?;
    let _controller = world.controller("a").await?;
    // nfs passes Pod Security `baseline` but is not in the default allowlist.
    let mut run = world.run("nfs");
    run.spec.volumes = Some(vec![serde_json::from_value(json!(
        {"name": "shared", "nfs": {"server": "10.0.0.1", "path": "/exports"}}
    ))?]);
    create(&world.cluster, &run).await?;

    let failed = wait_phase(&world.cluster, "nfs", Phase::Failed).await?;
    let (_, reason, message) = condition(&failed, "Succeeded").context("condition")?;
    assert_eq!(reason, "VolumeTypeNotAllowed", "{message}");
    assert!(
        message.contains("spec.volumes") && message.contains("shared") && message.contains("nfs"),
        "{message}"
    );
    assert!(pods_of(&world.cluster, "nfs").await?.is_empty());
    if let Some(created) = world.cluster.pod_creates()? {
        assert_eq!(created, 0, "no pod was ever created");
    }
    Ok(())
}
