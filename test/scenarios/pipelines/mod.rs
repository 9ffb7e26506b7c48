//! Pipelines (docs/pipelines.md) on the real control plane and a real registry: the Kubeflow
//! Pipelines component's function run by Python as a pipeline step would, under the shipped
//! least-privilege role (kfp.rs); the `kubectl wait` recipe, exactly as the docs write it
//! (kubectl_wait.rs); the Argo Workflows sample, dry-run against Argo's own Workflow CRD, its
//! TrainingRun run for real and its conditions and output paths read from that run (argo.rs).

mod argo;
mod kfp;
mod kubectl_wait;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use kube::Client;
use kube::config::{AuthInfo, Kubeconfig, NamedAuthInfo};
use provenant_testbed::cluster::{Cluster, TENANT};
use provenant_testbed::tools;

use crate::provenance::World;
pub(crate) use crate::provenance::{BROKEN, own_models_kubelet as kubelet};

pub(crate) fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// The world of a test, on a real API server only (RBAC, tokens and kubectl need one).
pub(crate) async fn real_world() -> Result<Option<World>> {
    let world = World::start(true).await?;
    if world.cluster.is_real() {
        return Ok(Some(world));
    }
    if std::env::var_os("E2E_REQUIRE_REAL").is_some() {
        bail!("E2E_REQUIRE_REAL is set but E2E_KUBECONFIG is not: no real cluster to run on");
    }
    eprintln!("skipped: this scenario needs a real API server (E2E_KUBECONFIG)");
    Ok(None)
}

/// The admin kubeconfig of the cluster with `user` as the credentials and the test namespace as
/// the context's namespace (what `kubectl` and the Python client default to).
pub(crate) fn kubeconfig_as(cluster: &Cluster, user: AuthInfo, file: &str) -> Result<PathBuf> {
    let mut kubeconfig = Kubeconfig::read_from(cluster.kubeconfig())?;
    kubeconfig.auth_infos = vec![NamedAuthInfo {
        name: "pipelines-test-user".into(),
        auth_info: Some(user),
        other: Default::default(),
    }];
    for context in kubeconfig
        .contexts
        .iter_mut()
        .filter_map(|c| c.context.as_mut())
    {
        context.user = Some("pipelines-test-user".into());
        context.namespace = Some(cluster.namespace.clone());
    }
    let path = cluster.dir().join(file);
    std::fs::write(&path, serde_json::to_vec_pretty(&kubeconfig)?)?;
    Ok(path)
}

pub(crate) async fn client_of(kubeconfig: &Path) -> Result<Client> {
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(kubeconfig)?,
        &Default::default(),
    )
    .await?;
    Ok(Client::try_from(config)?)
}

/// `kubectl` (hack/tools/bin) with `kubeconfig`; `stdin` piped in when given.
pub(crate) async fn kubectl(
    kubeconfig: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<Output> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(tools::path("kubectl")?)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut input = child.stdin.take().context("stdin")?;
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .await?;
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .context("kubectl did not return within 120 s")??;
    Ok(out)
}

pub(crate) fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The team member of the docs: `edit` in the test namespace (with `provenant-edit`), as a
/// kubeconfig for kubectl.
pub(crate) async fn tenant_kubeconfig(cluster: &Cluster) -> Result<PathBuf> {
    cluster.tenant().await?;
    let mut admin = Kubeconfig::read_from(cluster.kubeconfig())?;
    let mut user = admin
        .auth_infos
        .pop()
        .and_then(|a| a.auth_info)
        .context("the admin kubeconfig has no user")?;
    user.impersonate = Some(TENANT.into());
    kubeconfig_as(cluster, user, "kubeconfig-tenant")
}
