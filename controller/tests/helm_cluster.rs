//! The chart on the real API server: the default render and the render with every optional
//! object (but the Prometheus Operator ones, whose CRDs this cluster lacks) pass a server-side dry
//! run with strict field validation (and a misspelled copy is refused); `helm install`, an upgrade
//! that changes the configuration (and rolls the pods), a refused upgrade and `helm uninstall`
//! work as docs/operations.md ("Install with Helm") says.

#[path = "support/helm.rs"]
mod helm;

#[path = "support/real_cluster.rs"]
mod real_cluster;

use std::path::Path;
use std::process::Output;

use anyhow::{Result, ensure};
use helm::{CHART, FULL_VALUES, template};
use real_cluster::kubectl;
use serde_json::Value;

const NAMESPACE: &str = "provenant-helm-dry-run";

#[test]
fn rendered_objects_pass_a_server_dry_run() -> Result<()> {
    let Some(kubeconfig) = real_cluster::kubeconfig()? else {
        return Ok(());
    };
    // Namespaced objects are dry-run in a namespace that exists (Helm's --create-namespace).
    let out = kubectl(&kubeconfig, &["create", "namespace", NAMESPACE])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success() || stderr.contains("AlreadyExists"),
        "{stderr}"
    );
    let dir = tempfile::tempdir()?;
    real_cluster::install_monitoring_crds(&kubeconfig)?;
    for (release, values, expected) in [
        (
            "dry-default",
            None,
            vec![
                "serviceaccount/dry-default-provenant-controller",
                "configmap/dry-default-provenant-config",
                "clusterrole.rbac.authorization.k8s.io/dry-default-provenant-controller",
                "clusterrole.rbac.authorization.k8s.io/dry-default-provenant-edit",
                "clusterrole.rbac.authorization.k8s.io/dry-default-provenant-view",
                "clusterrole.rbac.authorization.k8s.io/dry-default-provenant-revoker",
                "clusterrolebinding.rbac.authorization.k8s.io/dry-default-provenant-controller",
                "role.rbac.authorization.k8s.io/dry-default-provenant-controller",
                "role.rbac.authorization.k8s.io/dry-default-provenant-lineage-reader",
                "rolebinding.rbac.authorization.k8s.io/dry-default-provenant-controller",
                "service/dry-default-provenant-controller-metrics",
                "deployment.apps/dry-default-provenant-controller",
                "poddisruptionbudget.policy/dry-default-provenant-controller",
            ],
        ),
        (
            "dry-full",
            Some(FULL_VALUES),
            vec![
                "deployment.apps/dry-full-provenant-controller",
                "poddisruptionbudget.policy/dry-full-provenant-controller",
                "networkpolicy.networking.k8s.io/dry-full-provenant-controller",
                "role.rbac.authorization.k8s.io/dry-full-provenant-controller",
            ],
        ),
    ] {
        let mut expected = expected;
        if release == "dry-full" {
            expected.push("servicemonitor.monitoring.coreos.com/dry-full-provenant-controller");
            expected.push("prometheusrule.monitoring.coreos.com/dry-full-provenant-alerts");
        }
        let rendered = template(release, NAMESPACE, values, &[])
            .map_err(|e| anyhow::anyhow!("helm template: {e}"))?;
        let file = dir.path().join(format!("{release}.yaml"));
        std::fs::write(&file, &rendered)?;
        let out = real_cluster::dry_run(&kubeconfig, &file)?;
        let created = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.success(),
            "{release}: the API server refused: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for name in expected {
            ensure!(
                created.lines().any(|l| l == name),
                "{release}: {name} not created; created:\n{created}"
            );
        }
        // The check can fail: a misspelled field is refused.
        ensure!(rendered.contains("\n      serviceAccountName:"));
        let misspelled = dir.path().join("misspelled.yaml");
        let text = rendered.replacen(
            "\n      serviceAccountName:",
            "\n      serviceAccount_Name:",
            1,
        );
        std::fs::write(&misspelled, text)?;
        let out = real_cluster::dry_run(&kubeconfig, &misspelled)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !out.status.success() && stderr.contains("unknown field"),
            "{release}: a misspelled copy was accepted: {stderr}"
        );
    }
    // Best effort: on a long-lived E2E_KUBECONFIG cluster, leave nothing behind.
    kubectl(
        &kubeconfig,
        &["delete", "namespace", NAMESPACE, "--wait=false"],
    )?;
    Ok(())
}

/// `helm ARGS --kubeconfig KUBECONFIG`.
fn helm_on(kubeconfig: &Path, args: &[&str]) -> Output {
    let mut args = args.to_vec();
    args.extend(["--kubeconfig", kubeconfig.to_str().unwrap()]);
    helm::helm(&args)
}

fn get(kubeconfig: &Path, namespace: &str, what: &str) -> Result<Value> {
    let out = kubectl(kubeconfig, &["get", "-n", namespace, what, "-o", "json"])?;
    ensure!(
        out.status.success(),
        "kubectl get {what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

#[test]
fn install_upgrade_and_uninstall() -> Result<()> {
    let Some(kubeconfig) = real_cluster::kubeconfig()? else {
        return Ok(());
    };
    let (release, ns) = ("helm-install", "provenant-helm-install");
    let deployment = "deployment/helm-install-provenant-controller";
    let succeeded = |out: &Output, what: &str| -> Result<String> {
        ensure!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    // --skip-crds: the other tests of the suite install crds/ into this cluster themselves (the
    // chart's copy is the same file, helm_chart.rs).
    let install = [
        "install",
        release,
        CHART,
        "-n",
        ns,
        "--create-namespace",
        "--skip-crds",
    ];
    let notes = succeeded(&helm_on(&kubeconfig, &install), "helm install")?;
    ensure!(
        notes.contains(&format!(
            "provenant keys generate --secret provenant-signing-key --namespace {ns}"
        )),
        "{notes}"
    );
    let before = get(&kubeconfig, ns, deployment)?;
    let checksum =
        |d: &Value| d["spec"]["template"]["metadata"]["annotations"]["checksum/config"].clone();

    // A configuration change reaches the ConfigMap and rolls the pods.
    let upgrade = [
        "upgrade",
        release,
        CHART,
        "-n",
        ns,
        "--reuse-values",
        "--set",
        "config.provenance.encoding=both",
    ];
    succeeded(&helm_on(&kubeconfig, &upgrade), "helm upgrade")?;
    let config = get(&kubeconfig, ns, "configmap/helm-install-provenant-config")?;
    let config = provenant::config::ControllerConfig::from_yaml(
        config["data"]["config.yaml"].as_str().unwrap(),
        "the upgraded ConfigMap",
    )?;
    ensure!(config.provenance.encoding == provenant::storage::Encoding::Both);
    let after = get(&kubeconfig, ns, deployment)?;
    ensure!(
        checksum(&before) != checksum(&after),
        "the pod template did not change"
    );
    ensure!(after["metadata"]["generation"].as_i64() > before["metadata"]["generation"].as_i64());

    // Bad values change nothing.
    let bad = [
        "upgrade",
        release,
        CHART,
        "-n",
        ns,
        "--reuse-values",
        "--set",
        "replicas=-1",
    ];
    let out = helm_on(&kubeconfig, &bad);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && stderr.contains("/replicas"),
        "{stderr}"
    );
    let unchanged = get(&kubeconfig, ns, deployment)?;
    ensure!(unchanged["metadata"]["generation"] == after["metadata"]["generation"]);

    succeeded(
        &helm_on(&kubeconfig, &["uninstall", release, "-n", ns]),
        "helm uninstall",
    )?;
    let gone = ["get", "clusterrole", "helm-install-provenant-controller"];
    let out = kubectl(&kubeconfig, &gone)?;
    ensure!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("NotFound"),
        "helm uninstall left the ClusterRole"
    );
    kubectl(&kubeconfig, &["delete", "namespace", ns, "--wait=false"])?;
    Ok(())
}
