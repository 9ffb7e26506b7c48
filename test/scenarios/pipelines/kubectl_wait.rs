//! The `kubectl wait` recipe of docs/pipelines.md, run exactly as written there.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use provenant::api::{Phase, TrainingRun};
use provenant_testbed::tools;
use serde_json::json;

use super::{BROKEN, kubelet, real_world, repo_file, tenant_kubeconfig, text};
use crate::provenance::{MODEL_REPO, World};
use crate::support::*;

/// The commands (`$ ` lines) and outputs of the first console block after `heading` in
/// docs/pipelines.md.
fn documented_session(heading: &str) -> Result<Vec<(String, Vec<String>)>> {
    let doc = std::fs::read_to_string(repo_file("docs/pipelines.md"))?;
    let start = doc
        .find(heading)
        .with_context(|| format!("no {heading:?}"))?;
    let block = doc[start..]
        .split("```console\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .context("no console block")?;
    let mut session: Vec<(String, Vec<String>)> = Vec::new();
    for line in block.lines() {
        match (line.strip_prefix("$ "), session.last_mut()) {
            (Some(command), _) => session.push((command.to_string(), Vec::new())),
            (None, Some((_, output))) => output.push(line.to_string()),
            (None, None) => bail!("the block starts with output: {line}"),
        }
    }
    Ok(session)
}

#[tokio::test]
async fn the_kubectl_wait_recipe_gets_the_digest() -> Result<()> {
    let Some(world) = real_world().await? else {
        return Ok(());
    };
    let _sim = kubelet(&world).await?;
    let _controller = world.controller("a").await?;
    let kubeconfig = tenant_kubeconfig(&world.cluster).await?;
    // The recipe's run.yaml, with this test's registry.
    let dir = world.cluster.dir().join("recipe");
    std::fs::create_dir_all(&dir)?;
    let recipe_run = run(
        "bert",
        json!({"output": {"repository": world.repository()}, "seed": 42}),
    );
    std::fs::write(dir.join("run.yaml"), serde_json::to_string(&recipe_run)?)?;

    let session = documented_session("## The `kubectl wait` recipe")?;
    assert!(session.len() >= 4, "{session:?}");
    let path = format!(
        "{}:{}",
        tools::bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut last = String::new();
    for (command, documented) in &session {
        let run = tokio::process::Command::new("sh")
            .args(["-c", command])
            .current_dir(&dir)
            .env("PATH", &path)
            .env("KUBECONFIG", &kubeconfig)
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(120), run)
            .await
            .with_context(|| format!("{command} did not return within 120 s"))??;
        assert!(out.status.success(), "{command}: {}", text(&out));
        last = String::from_utf8_lossy(&out.stdout).trim_end().to_string();
        // Every output but the model reference (a digest of this run) is as documented.
        if !command.contains("jsonpath='{.status.outputs") {
            assert_eq!(last, documented.join("\n"), "{command}");
        }
    }
    let bert = world.cluster.api::<TrainingRun>().get("bert").await?;
    let digest = World::model_digest(&bert);
    assert_eq!(last, format!("{}@{digest}", world.repository()));
    let pushed = world.registry.resolve(MODEL_REPO, "bert").await?;
    assert_eq!(pushed.as_deref(), Some(digest.as_str()));

    // A failed run never reaches Succeeded: the first wait ends at its timeout, as documented.
    let broken = format!("{BROKEN}recipe");
    let failing = run(
        &broken,
        json!({"output": {"repository": world.repository()}}),
    );
    create(&world.cluster, &failing).await?;
    wait_phase(&world.cluster, &broken, Phase::Failed).await?;
    let (first_wait, _) = &session[1];
    let command = first_wait
        .replace("trainingrun/bert", &format!("trainingrun/{broken}"))
        .replace("--timeout=6h", "--timeout=2s");
    let out = tokio::process::Command::new("sh")
        .args(["-c", &command])
        .env("PATH", &path)
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .await?;
    assert_eq!(out.status.code(), Some(1), "{command}: {}", text(&out));
    assert!(
        text(&out).contains("timed out waiting for the condition"),
        "{}",
        text(&out)
    );
    Ok(())
}
