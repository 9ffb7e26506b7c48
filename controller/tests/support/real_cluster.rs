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
