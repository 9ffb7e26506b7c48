//! `provenant controller` as a process: connects through the kubeconfig, becomes ready once the
//! CRD is served, exits cleanly on SIGTERM.

use std::time::Duration;

use provenant_testbed::cluster::{Cluster, ControllerProcess};

use crate::support::{binary, init_logs};

#[tokio::test]
async fn controller_connects_serves_health_and_stops_on_sigterm() -> anyhow::Result<()> {
    init_logs();
    let cluster = Cluster::start().await?;
    let mut controller =
        ControllerProcess::start(binary(), &cluster, "solo", &["--log-format=json"])?;
    controller.wait_ready(Duration::from_secs(30)).await?;
    assert_eq!(controller.get("/healthz").await?, (200, "ok".to_string()));
    // Every family of docs/operations.md's Metrics table is served from the start, before any
    // event (dashboards and `rate()` alerts need the series).
    let metrics = controller.metrics().await?;
    let doc = include_str!("../../docs/operations.md");
    let table = doc
        .split_once("\n### Metrics\n")
        .and_then(|(_, rest)| rest.split("\n#").next())
        .expect("a ### Metrics section");
    let families: Vec<&str> = table
        .lines()
        .filter_map(|l| l.strip_prefix("| `")?.split(['`', '{']).next())
        .filter(|name| name.starts_with("provenant_"))
        .collect();
    assert!(families.len() >= 14, "{families:?}");
    for family in families {
        assert!(
            metrics.contains(&format!("\n# TYPE {family} ")),
            "{family} not served:\n{metrics}"
        );
    }
    assert!(
        metrics.contains("provenant_reconcile_errors_total{reason=\"KubeApi\"} 0"),
        "{metrics}"
    );

    let log = controller.log_text();
    let connected = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["message"] == "connected to the Kubernetes API")
        .unwrap_or_else(|| panic!("no JSON 'connected' line in:\n{log}"));
    assert!(
        connected["api"].as_str().unwrap().starts_with("http"),
        "{connected}"
    );

    let status = controller.terminate(Duration::from_secs(30)).await?;
    assert!(status.success(), "exit status {status}");
    Ok(())
}

#[tokio::test]
async fn unreachable_api_is_a_clear_error() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    let port = provenant_testbed::cluster::free_port()?;
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\nusers: [{{name: u, user: {{}}}}]\ncontexts: [{{name: x, context: {{cluster: c, user: u}}}}]\ncurrent-context: x\n"
        ),
    )?;
    let out = std::process::Command::new(binary())
        .args([
            "controller",
            "--health-addr=127.0.0.1:0",
            "--log-format=text",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .output()?;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "cannot reach the Kubernetes API at http://127.0.0.1:{port}"
        )),
        "{stderr}"
    );
    Ok(())
}

#[tokio::test]
async fn a_malformed_revocation_selector_is_refused_at_start() -> anyhow::Result<()> {
    let cluster = Cluster::start().await?;
    let out = tokio::process::Command::new(binary())
        .args([
            "controller",
            "--health-addr=127.0.0.1:0",
            "--log-format=text",
            "--leader-elect=false",
            "--revocation-selector=team in (a",
        ])
        .arg(format!("--namespace={}", cluster.namespace))
        .arg(format!(
            "--controller-namespace={}",
            cluster.controller_namespace
        ))
        .env("KUBECONFIG", cluster.controller_kubeconfig())
        .output()
        .await?;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--revocation-selector \"team in (a\" is refused by the API server"),
        "{stderr}"
    );
    Ok(())
}
