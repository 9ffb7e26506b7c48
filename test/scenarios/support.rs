//! Helpers shared by the scenarios.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, PostParams};
use provenant::api::{Phase, TrainingRun};
use provenant_testbed::cluster::{Cluster, eventually};
use serde_json::json;

pub const TIMEOUT: Duration = Duration::from_secs(60);

pub fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_provenant"))
}

pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

pub const IMAGE_DIGEST: &str =
    "sha256:1111111111111111111111111111111111111111111111111111111111111111";
pub const DATA_DIGEST: &str =
    "sha256:2222222222222222222222222222222222222222222222222222222222222222";
pub const MODEL_DIGEST: &str =
    "sha256:3333333333333333333333333333333333333333333333333333333333333333";
pub const REPOSITORY: &str = "registry.example.com/models/bert";

/// A TrainingRun from a spec written as JSON.
pub fn run(name: &str, spec: serde_json::Value) -> TrainingRun {
    let mut full = json!({
        "image": format!("registry.example.com/train@{IMAGE_DIGEST}"),
        "seed": 42,
        "output": {"repository": REPOSITORY},
    });
    for (k, v) in spec.as_object().cloned().unwrap_or_default() {
        full[k] = v;
    }
    serde_json::from_value(json!({
        "apiVersion": "provenant.dev/v1alpha1",
        "kind": "TrainingRun",
        "metadata": {"name": name},
        "spec": full,
    }))
    .expect("valid TrainingRun")
}

pub async fn create(cluster: &Cluster, run: &TrainingRun) -> Result<TrainingRun> {
    Ok(cluster
        .api::<TrainingRun>()
        .create(&PostParams::default(), run)
        .await?)
}

/// Create `run` as the tenant of the test namespace (`edit`, which the shipped `provenant-edit`
/// aggregated role extends to TrainingRuns; `Cluster::tenant`), as a team member submits it.
pub async fn create_as_tenant(cluster: &Cluster, run: &TrainingRun) -> Result<TrainingRun> {
    let tenant = cluster.tenant().await?;
    let runs = kube::Api::<TrainingRun>::namespaced(tenant, &cluster.namespace);
    // The authorizer learns of the binding, and `edit` of its aggregated rules, through watches.
    for _ in 0..50 {
        match runs.create(&PostParams::default(), run).await {
            Err(kube::Error::Api(s)) if s.code == 403 => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            other => return other.context("a team member may create TrainingRuns"),
        }
    }
    anyhow::bail!("the tenant was never allowed to create TrainingRuns")
}

/// Wait until the run reaches `phase` (and the controller wrote its completion for terminal ones).
pub async fn wait_phase(cluster: &Cluster, name: &str, phase: Phase) -> Result<TrainingRun> {
    let api = cluster.api::<TrainingRun>();
    eventually(TIMEOUT, &format!("run {name} to reach {phase:?}"), || {
        let api = api.clone();
        async move {
            let run = api.get(name).await?;
            let status = run.status.clone().unwrap_or_default();
            Ok((status.phase == Some(phase)).then_some(run))
        }
    })
    .await
}

pub async fn pods_of(cluster: &Cluster, run: &str) -> Result<Vec<Pod>> {
    let list = cluster
        .api::<Pod>()
        .list(&ListParams::default().labels(&format!("provenant.dev/run={run}")))
        .await?;
    Ok(list.items)
}

/// The condition `type_` of a run: (status, reason, message).
pub fn condition(run: &TrainingRun, type_: &str) -> Option<(String, String, String)> {
    run.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// A controller configuration file: the shipped accelerator profiles with `provenance` replaced by
/// `provenance_yaml` (a YAML block starting with `provenance:`).
pub fn controller_config(
    cluster: &Cluster,
    name: &str,
    provenance_yaml: &str,
) -> std::path::PathBuf {
    let defaults = provenant::config::DEFAULT_CONFIG_YAML;
    let profiles = &defaults[..defaults
        .find("\nprovenance:")
        .expect("defaults have a provenance block")];
    let path = cluster.dir().join(format!("{name}.yaml"));
    std::fs::write(&path, format!("{profiles}\n{provenance_yaml}\n")).expect("write config");
    path
}

/// Provenance off: runs release their finalizer once materials are recorded.
pub const PROVENANCE_DISABLED: &str = "provenance:\n  enabled: false\n";

/// A metric's value from the Prometheus exposition text (the line that starts with `series`).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Waits for a Warning Event with `reason` whose note contains `text` (Events are written after
/// the status, so a test that has seen the status must still wait for them).
pub async fn warning_event(cluster: &Cluster, reason: &str, text: &str) -> Result<String> {
    let events = cluster.api::<Event>();
    eventually(TIMEOUT, &format!("a {reason} Warning Event"), || {
        let events = events.clone();
        async move {
            let list = events.list(&ListParams::default()).await?;
            Ok(list.items.into_iter().find_map(|e| {
                let note = e.note.unwrap_or_default();
                (e.reason.as_deref() == Some(reason)
                    && e.type_.as_deref() == Some("Warning")
                    && note.contains(text))
                .then_some(note)
            }))
        }
    })
    .await
}
