//! The real API server of `make test` (`E2E_KUBECONFIG`), for the manifest tests that apply with
//! the pinned kubectl: found, or skipped outside `make test` (an error under `E2E_REQUIRE_REAL`).

#![allow(dead_code)] // each test target uses its part

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use provenant_testbed::tools;

/// The real cluster's kubeconfig, or None (the caller skips) outside `make test`.
pub fn kubeconfig() -> Result<Option<PathBuf>> {
    match std::env::var_os("E2E_KUBECONFIG") {
        Some(path) => Ok(Some(PathBuf::from(path))),
        None if std::env::var_os("E2E_REQUIRE_REAL").is_some() => {
            bail!("E2E_REQUIRE_REAL is set but E2E_KUBECONFIG is not: no real cluster to run on")
        }
        None => {
            eprintln!(
                "skipped: this test needs a real API server (E2E_KUBECONFIG; `make test` starts one)"
            );
            Ok(None)
        }
    }
}

/// The pinned kubectl against `kubeconfig`.
pub fn kubectl(kubeconfig: &Path, args: &[&str]) -> Result<Output> {
    Command::new(tools::path("kubectl")?)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .context("running kubectl")
}

/// Waits until the API server serves the CRD `name`. (`kubectl wait --for condition=Established`
/// fails instead of waiting while a new CRD has no conditions yet.)
pub fn established(kubeconfig: &Path, name: &str) -> Result<()> {
    let jsonpath = r#"jsonpath={.status.conditions[?(@.type=="Established")].status}"#;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = kubectl(kubeconfig, &["get", "crd", name, "-o", jsonpath])?;
        if out.status.success() && out.stdout == b"True" {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "CRD {name} not established after 120 s: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Applies the CRD in `file` server-side and waits until `name` is served. Server-side: other
/// tests apply the same CRDs to this cluster, and Kyverno's (1.4 MB) is too large for client-side
/// apply's annotation.
pub fn install_crd(kubeconfig: &Path, name: &str, file: &Path) -> Result<()> {
    let path = file.to_str().context("CRD path")?;
    let args = ["apply", "--server-side", "--force-conflicts", "-f", path];
    let out = kubectl(kubeconfig, &args)?;
    ensure!(
        out.status.success(),
        "kubectl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    established(kubeconfig, name)
}

/// The Prometheus Operator's ServiceMonitor and PrometheusRule CRDs (hack/tools/prometheus-operator,
/// copied into hack/tools/bin/crds by hack/tools.sh), installed.
pub fn install_monitoring_crds(kubeconfig: &Path) -> Result<()> {
    for kind in ["servicemonitors", "prometheusrules"] {
        let file = tools::bin_dir()
            .join("crds")
            .join(format!("monitoring.coreos.com_{kind}.yaml"));
        ensure!(file.is_file(), "{}: run `make tools`", file.display());
        install_crd(kubeconfig, &format!("{kind}.monitoring.coreos.com"), &file)?;
    }
    Ok(())
}

/// `kubectl create --dry-run=server --validate=strict` of `file`: the API server's admission and
/// schema checks, nothing stored; stdout lists the objects as `kind/name`.
pub fn dry_run(kubeconfig: &Path, file: &Path) -> Result<Output> {
    let file = file.to_str().context("manifest path")?;
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
