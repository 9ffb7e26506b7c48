//! The chart's objects are what the real API server accepts: the default render and the render
//! with every optional object (but the Prometheus Operator ones, whose CRDs this cluster lacks)
//! pass a server-side dry run with strict field validation, and a misspelled copy is refused.

#[path = "support/helm.rs"]
mod helm;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, ensure};
use helm::{FULL_VALUES, template};

const NAMESPACE: &str = "provenant-helm-dry-run";

fn kubectl(kubeconfig: &Path, args: &[&str]) -> Result<Output> {
    Command::new(provenant_testbed::tools::path("kubectl")?)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .context("running kubectl")
}

fn dry_run(kubeconfig: &Path, file: &Path) -> Result<Output> {
    let file = file.to_str().unwrap();
    let args = [
        "create",
        "--dry-run=server",
        "--validate=strict",
        "-o",
        "name",
        "-f",
        file,
    ];
    kubectl(kubeconfig, &args)
}

#[test]
fn rendered_objects_pass_a_server_dry_run() -> Result<()> {
    let Some(kubeconfig) = std::env::var_os("E2E_KUBECONFIG").map(PathBuf::from) else {
        ensure!(
            std::env::var_os("E2E_REQUIRE_REAL").is_none(),
            "E2E_REQUIRE_REAL is set but E2E_KUBECONFIG is not: no real cluster to run on"
        );
        eprintln!(
            "skipped: this test needs a real API server (E2E_KUBECONFIG; `make test` starts one)"
        );
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
    let no_monitoring = [
        "--set",
        "monitoring.serviceMonitor.enabled=false",
        "--set",
        "monitoring.prometheusRule.enabled=false",
    ];
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
        let rendered = template(release, NAMESPACE, values, &no_monitoring)
            .map_err(|e| anyhow::anyhow!("helm template: {e}"))?;
        let file = dir.path().join(format!("{release}.yaml"));
        std::fs::write(&file, &rendered)?;
        let out = dry_run(&kubeconfig, &file)?;
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
        let out = dry_run(&kubeconfig, &misspelled)?;
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
