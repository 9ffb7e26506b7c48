//! Issue 14, point 2: which namespace may write where. One controller, with its registry
//! credentials, serves every team; `spec.output.repository` may name any repository. Under a
//! `provenance.repositoryPolicy`, a tenant's run naming another team's repository is refused before
//! any pod starts (no accelerator wasted) and the controller sends nothing there; a run inside its
//! policy is published with the credentials its rule names, never with another team's.

use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use provenant::api::{Phase, ProvenanceState};
use provenant_testbed::cluster::ControllerProcess;

use crate::provenance::{MODEL_REPO, World};
use crate::support::*;

/// The controller with `provenance.repositoryPolicy` (YAML list items, indented for the key) and
/// `credentials_secret` as the global `provenance.registry.credentialsSecret`.
async fn controller_with_policy(
    world: &World,
    policy: &str,
    credentials_secret: Option<&str>,
) -> Result<ControllerProcess> {
    let global = credentials_secret
        .map(|s| format!("    credentialsSecret: {s}\n"))
        .unwrap_or_default();
    let provenance = format!(
        "provenance:\n  enabled: true\n  registry:\n{global}    insecure: [\"{}\"]\n    attempts: 2\n  repositoryPolicy:\n{policy}",
        world.proxy.host()
    );
    let config = controller_config(&world.cluster, "repository-policy", &provenance);
    let flag = format!("--config={}", config.display());
    let mut controller = ControllerProcess::start(binary(), &world.cluster, "a", &[&flag])?;
    controller.wait_ready(Duration::from_secs(30)).await?;
    Ok(controller)
}

/// A `kubernetes.io/dockerconfigjson` Secret `name` in the controller's namespace with
/// `user:password` for `host`.
async fn registry_secret(
    world: &World,
    name: &str,
    host: &str,
    user: &str,
    password: &str,
) -> Result<()> {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let config = format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#);
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/dockerconfigjson".into()),
        data: Some(
            [(
                ".dockerconfigjson".to_string(),
                ByteString(config.into_bytes()),
            )]
            .into(),
        ),
        ..Default::default()
    };
    world
        .cluster
        .controller_api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .with_context(|| format!("creating Secret {name}"))?;
    // As the operator does for every Secret the configuration names (docs/operations.md, RBAC).
    world.cluster.allow_controller_secrets(&[name]).await?;
    Ok(())
}

#[tokio::test]
async fn a_run_naming_another_teams_repository_is_refused_before_any_pod() -> Result<()> {
    let world = World::start(true).await?;
    let host = world.proxy.host().to_string();
    let namespace = world.cluster.namespace.clone();
    // Team B's repository: its account would be the only one let in (the controller must not
    // even probe it).
    world
        .proxy
        .require_basic("models/team-b", "team-b", "b-pass");
    let policy = format!(
        "    - namespaces: [{namespace}]\n      repositories: [\"{host}/{MODEL_REPO}\"]\n    - namespaces: [team-b]\n      repositories: [\"{host}/models/team-b\"]\n    - namespaces: [team-c]\n      repositories: [\"{host}/models/team-c\"]\n      credentialsSecret: team-c-registry\n"
    );
    let _controller = controller_with_policy(&world, &policy, None).await?;

    let mut theirs = world.run("steal");
    let target = format!("{host}/models/team-b/bert");
    theirs.spec.output.repository = target.clone();
    create_as_tenant(&world.cluster, &theirs).await?;

    let failed = wait_phase(&world.cluster, "steal", Phase::Failed).await?;
    let (status, reason, message) = condition(&failed, "Succeeded").context("Succeeded")?;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "RepositoryNotAllowed"),
        "{message}"
    );
    assert!(
        message.contains(&target) && message.contains(&namespace),
        "names the repository and the namespace: {message}"
    );
    assert!(
        message.contains(&format!("{host}/{MODEL_REPO}")),
        "says what the namespace may use: {message}"
    );
    assert!(
        !message.contains("team-c"),
        "never shows other teams' grants: {message}"
    );
    // Refused before any pod: nothing was scheduled, nothing holds an accelerator.
    assert!(pods_of(&world.cluster, "steal").await?.is_empty());
    warning_event(&world.cluster, "RepositoryNotAllowed", &target).await?;
    // Nothing reached team B's repository.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        world.proxy.users_seen("models/team-b"),
        Vec::<Option<String>>::new()
    );
    assert!(pods_of(&world.cluster, "steal").await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_run_inside_its_policy_is_attached_with_its_namespaces_credentials() -> Result<()> {
    let world = World::start(true).await?;
    let host = world.proxy.host().to_string();
    let namespace = world.cluster.namespace.clone();
    // Only team A's account may read and write team A's repository.
    world.proxy.require_basic(MODEL_REPO, "team-a", "a-pass");
    // The global credentials are another team's: they must never be sent for this run.
    registry_secret(&world, "global-registry", &host, "team-b", "b-pass").await?;
    registry_secret(&world, "team-a-registry", &host, "team-a", "a-pass").await?;
    let policy = format!(
        "    - namespaces: [{namespace}]\n      repositories: [\"{host}/{MODEL_REPO}\"]\n      credentialsSecret: team-a-registry\n    - namespaces: [team-b]\n      repositories: [\"{host}/models/team-b\"]\n"
    );
    let sim = world.kubelet(|| {}).await?;
    let _controller = controller_with_policy(&world, &policy, Some("global-registry")).await?;

    create_as_tenant(&world.cluster, &world.run("mine")).await?;
    let attached = world
        .wait_provenance("mine", ProvenanceState::Attached)
        .await?;
    let digest = World::model_digest(&attached);
    assert!(
        world
            .registry
            .get_manifest(MODEL_REPO, &World::tag(&digest, ".att"))
            .await?
            .is_some(),
        "the attestation is in team A's repository"
    );
    let users = world.proxy.users_seen(MODEL_REPO);
    assert!(
        users.contains(&Some("team-a".into())),
        "team A's credentials were used: {users:?}"
    );
    assert!(
        !users.contains(&Some("team-b".into())),
        "another team's credentials were never sent: {users:?}"
    );
    sim.shutdown().await?;
    Ok(())
}
