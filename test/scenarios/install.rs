//! `kubectl apply -k config/default` on a real API server, as the README tells a user to install
//! provenant: every object passes the server's own validation and admission (the double
//! validates no built-in type and serves no Deployments or RBAC), and the CRD is established.
//! On the suite's own control plane the objects are created (it runs no Deployment controller,
//! so no controller pod starts); on a cluster named by `E2E_KUBECONFIG` only the namespace is
//! created and the rest is a server-side dry run, so the suite never leaves a running controller
//! there.

use anyhow::{Context, Result};
use provenant_testbed::cluster::Cluster;
use provenant_testbed::tools;

use crate::support::init_logs;

async fn kubectl(cluster: &Cluster, args: &[&str]) -> Result<(bool, String)> {
    let out = tokio::process::Command::new(tools::path("kubectl")?)
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig())
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .await
        .context("running kubectl")?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

#[tokio::test]
async fn config_default_installs_with_kubectl_apply() -> Result<()> {
    init_logs();
    let Some(cluster) = Cluster::start_real().await? else {
        return Ok(());
    };
    let local = cluster.is_local_control_plane();
    let mut apply = vec!["apply", "-k", "config/default"];
    if !local {
        // A dry run cannot create objects in a namespace it only pretends to create.
        let namespace = ["apply", "-f", "config/default/namespace.yaml"];
        let (ok, out) = kubectl(&cluster, &namespace).await?;
        assert!(ok, "{out}");
        apply.push("--dry-run=server");
    }
    let (ok, out) = kubectl(&cluster, &apply).await?;
    assert!(ok, "kubectl {}: {out}", apply.join(" "));
    for object in [
        "namespace/provenant-system",
        "customresourcedefinition.apiextensions.k8s.io/trainingruns.provenant.dev",
        "serviceaccount/provenant-controller",
        "role.rbac.authorization.k8s.io/provenant-controller",
        "clusterrole.rbac.authorization.k8s.io/provenant-controller",
        "rolebinding.rbac.authorization.k8s.io/provenant-controller",
        "clusterrolebinding.rbac.authorization.k8s.io/provenant-controller",
        "configmap/provenant-config-",
        "service/provenant-controller-metrics",
        "deployment.apps/provenant-controller",
    ] {
        assert!(out.contains(object), "{object} not applied:\n{out}");
    }
    if !local {
        return Ok(());
    }
    let (ok, out) = kubectl(
        &cluster,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            "crd/trainingruns.provenant.dev",
        ],
    )
    .await?;
    assert!(ok, "{out}");
    // The Deployment as stored: the server defaulted and accepted the pod template.
    let (ok, out) = kubectl(
        &cluster,
        &[
            "get",
            "deployment/provenant-controller",
            "--namespace=provenant-system",
            "-o=jsonpath={.spec.template.spec.serviceAccountName} {.spec.template.spec.securityContext.runAsNonRoot}",
        ],
    )
    .await?;
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "provenant-controller true");
    Ok(())
}
