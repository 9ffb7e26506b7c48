//! The Kubeflow Pipelines component (kubeflow/provenant_kfp): its function, run by Python as a
//! step would, as the ServiceAccount the shipped kfp-rbac.yaml binds and nothing more.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::config::AuthInfo;
use provenant::api::{Phase, ProvenanceState, TrainingRun};
use provenant_testbed::cluster::{Cluster, eventually};
use serde_json::{Value, json};

use super::{client_of, kubeconfig_as, kubelet, real_world, repo_file};
use crate::provenance::{MODEL_REPO, World};
use crate::support::*;

/// The KFP runner of the docs: ServiceAccount `pipeline-runner` of the test namespace, bound to
/// the shipped `provenant-pipeline-runner` ClusterRole (config/samples/pipelines/kfp-rbac.yaml)
/// and to nothing else. Returns a kubeconfig holding one of its tokens.
async fn pipeline_runner(cluster: &Cluster) -> Result<PathBuf> {
    let text = std::fs::read_to_string(repo_file("config/samples/pipelines/kfp-rbac.yaml"))?;
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)?;
    let ns = &cluster.namespace;
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "pipeline-runner"}}))?;
    Api::<ServiceAccount>::namespaced(cluster.client.clone(), ns)
        .create(&PostParams::default(), &sa)
        .await?;
    for mut doc in docs.into_iter().filter(|d| !d.is_null()) {
        match doc["kind"].as_str() {
            Some("ClusterRole") => {
                let role: ClusterRole = serde_json::from_value(doc)?;
                Api::<ClusterRole>::all(cluster.client.clone())
                    .patch(
                        "provenant-pipeline-runner",
                        &PatchParams::apply("provenant-tests").force(),
                        &Patch::Apply(&role),
                    )
                    .await?;
            }
            Some("RoleBinding") => {
                // The sample binds `kubeflow`'s runner; here the test namespace's.
                doc["metadata"]["namespace"] = json!(ns);
                doc["subjects"][0]["namespace"] = json!(ns);
                let binding: RoleBinding = serde_json::from_value(doc)?;
                Api::<RoleBinding>::namespaced(cluster.client.clone(), ns)
                    .create(&PostParams::default(), &binding)
                    .await?;
            }
            other => bail!("kfp-rbac.yaml: unexpected kind {other:?}"),
        }
    }
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let token = Api::<ServiceAccount>::namespaced(cluster.client.clone(), ns)
        .create_token_request("pipeline-runner", &PostParams::default(), &request)
        .await?
        .status
        .and_then(|s| s.token)
        .context("the TokenRequest has no token")?;
    let user = AuthInfo {
        token: Some(token.into()),
        ..Default::default()
    };
    let path = kubeconfig_as(cluster, user, "kubeconfig-pipeline-runner")?;
    // The authorizer learns of the binding through a watch: wait until `get` is no longer 403.
    let runs = Api::<TrainingRun>::namespaced(client_of(&path).await?, ns);
    eventually(TIMEOUT, "the pipeline runner's role to apply", || {
        let runs = runs.clone();
        async move { Ok(runs.get_opt("none").await.ok().map(|_| ())) }
    })
    .await?;
    Ok(path)
}

/// Run the component's function (test/python/run_kfp_component.py) with `kwargs` as `kubeconfig`'s
/// user: (exit code 0?, the JSON it printed).
async fn component(kubeconfig: &Path, kwargs: &Value) -> Result<(bool, Value)> {
    let script = repo_file("test/python/run_kfp_component.py");
    let run = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(kwargs.to_string())
        .env("KUBECONFIG", kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .context("the component did not return within 180 s")?
        .context("python3 is needed")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "Python packages missing: pip install -r test/python/requirements.txt\n{stderr}"
    );
    // The step's own progress lines come first; the driver's JSON is the last line.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let printed: Value = serde_json::from_str(last)
        .with_context(|| format!("the component's driver printed no JSON:\n{stdout}{stderr}"))?;
    Ok((out.status.success(), printed))
}

#[tokio::test]
async fn kfp_component_returns_the_signed_model_and_fails_cleanly() -> Result<()> {
    let Some(world) = real_world().await? else {
        return Ok(());
    };
    let _sim = kubelet(&world).await?;
    let controller = world.controller("a").await?;
    let runner = pipeline_runner(&world.cluster).await?;
    let ns = world.cluster.namespace.clone();

    // Least privilege: the runner may not list, delete or write any run's status.
    let as_runner = Api::<TrainingRun>::namespaced(client_of(&runner).await?, &ns);
    let refused = |r: kube::Result<_>| matches!(r, Err(kube::Error::Api(s)) if s.code == 403);
    assert!(refused(
        as_runner.list(&ListParams::default()).await.map(|_| ())
    ));
    assert!(refused(
        as_runner.delete("x", &Default::default()).await.map(|_| ())
    ));

    let image = format!("registry.example.com/train@{IMAGE_DIGEST}");
    let kwargs = json!({
        "image": image,
        "output_repository": world.repository(),
        "seed": 7,
        "command": ["python", "-m", "train"],
        "datasets": [{"name": "wiki", "uri": "gs://data/wiki", "digest": DATA_DIGEST}],
        "hyperparameters": {"learningRate": 0.0003, "optimizer": "adamw"},
        "pipeline_run_id": "5d3c9d1e-0b7a-4c52-9a43-3f7b1c2d4e5f",
        "pipeline_task_name": "train-model",
        "timeout_seconds": 120,
    });
    let (ok, printed) = component(&runner, &kwargs).await?;
    assert!(ok, "{printed:#}");
    let name = printed["outputs"]["run_name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        name.starts_with("train-model-") && name.len() == "train-model-".len() + 10,
        "{name}"
    );
    assert_eq!(
        printed["outputs"]["namespace"],
        json!(ns),
        "the kubeconfig's namespace"
    );

    // The digest is the run's, and the registry's for the model the worker pushed.
    let run = world.cluster.api::<TrainingRun>().get(&name).await?;
    let status = run.status.clone().context("status")?;
    let digest = World::model_digest(&run);
    assert_eq!(printed["outputs"]["digest"], json!(digest));
    let pushed = world.registry.resolve(MODEL_REPO, &name).await?;
    assert_eq!(pushed.as_deref(), Some(digest.as_str()));
    assert_eq!(
        printed["uri"],
        json!(format!("oci://{}@{digest}", world.repository()))
    );
    let provenance = status.provenance.clone().context("provenance")?;
    assert_eq!(provenance.state, ProvenanceState::Attached);
    let metadata = &printed["metadata"];
    assert_eq!(metadata["attestations"], json!(provenance.attestations));
    let att = format!("{}:{}", world.repository(), World::tag(&digest, ".att"));
    assert!(
        provenance.attestations.iter().any(|a| a.starts_with(&att)),
        "{:?} lacks {att}",
        provenance.attestations
    );
    assert_eq!(metadata["trainingRun"], json!(name));
    assert_eq!(metadata["namespace"], json!(ns));
    assert_eq!(metadata["digest"], json!(digest));
    assert_eq!(
        metadata["predicateType"],
        json!("https://slsa.dev/provenance/v1")
    );

    // The run is what the parameters said, and owned by nothing.
    assert!(run.metadata.owner_references.is_none());
    assert_eq!(run.spec.seed, 7);
    assert_eq!(run.spec.image, image);
    assert_eq!(
        serde_json::to_value(&run.spec.hyperparameters)?,
        json!({"learningRate": 0.0003, "optimizer": "adamw"})
    );
    assert_eq!(run.spec.datasets[0].digest.as_deref(), Some(DATA_DIGEST));

    // A retried step (same pipeline run and task) takes its run back instead of training again.
    let (ok, again) = component(&runner, &kwargs).await?;
    assert!(ok, "{again:#}");
    assert_eq!(again["outputs"], printed["outputs"]);
    let runs = world
        .cluster
        .api::<TrainingRun>()
        .list(&ListParams::default())
        .await?;
    assert_eq!(runs.items.len(), 1);

    // A run planted under the name with this pipeline run's annotation but another spec (anyone
    // with `edit` here may create runs) is not taken for the step's own.
    let mut planted = run.clone();
    planted.metadata = serde_json::from_value(json!({"name": "planted", "annotations": {
        "pipelines.provenant.dev/kfp-run-id": kwargs["pipeline_run_id"],
    }}))?;
    planted.spec.seed = 8;
    planted.status = None;
    create(&world.cluster, &planted).await?;
    let mut adopting = kwargs.clone();
    adopting["run_name"] = json!("planted");
    let (ok, printed) = component(&runner, &adopting).await?;
    assert!(!ok, "{printed:#}");
    let text = printed["error"]["message"].as_str().unwrap_or_default();
    assert!(
        text.contains("already exists and is not this step's"),
        "{text}"
    );

    // A run that fails: the step fails with the run, its reason and message; no artifact.
    let mut failing = kwargs.clone();
    failing["run_name"] = json!("broken-kfp");
    let (ok, printed) = component(&runner, &failing).await?;
    assert!(!ok, "{printed:#}");
    let failed = wait_phase(&world.cluster, "broken-kfp", Phase::Failed).await?;
    let (_, reason, message) = condition(&failed, "Succeeded").context("Succeeded condition")?;
    assert_eq!(reason, "WorkerFailed");
    assert_eq!(printed["error"]["type"], json!("TrainingRunFailed"));
    let text = printed["error"]["message"].as_str().unwrap_or_default();
    for part in [format!("{ns}/broken-kfp"), reason.clone(), message.clone()] {
        assert!(text.contains(&part), "{text:?} lacks {part:?}");
    }
    assert_eq!(printed["uri"], json!(""));
    assert_eq!(printed["metadata"], json!({}));

    // A parameter the API server refuses: the step fails with its message, naming the field.
    let mut invalid = kwargs.clone();
    invalid["run_name"] = json!("bad-seed");
    invalid["seed"] = json!(-1);
    let (ok, printed) = component(&runner, &invalid).await?;
    assert!(!ok, "{printed:#}");
    let text = printed["error"]["message"].as_str().unwrap_or_default();
    let refusal = format!("creating TrainingRun {ns}/bad-seed: HTTP 422: ");
    assert!(
        text.starts_with(&refusal) && text.contains("spec.seed"),
        "{text}"
    );

    // A spec changed while the step waits (anyone with `edit` may, until the first pod; with the
    // controller stopped the run stays unstarted): the step fails instead of handing on a model
    // trained from someone else's spec.
    controller.kill()?;
    let mut edited = kwargs.clone();
    edited["run_name"] = json!("edited");
    let step = {
        let runner = runner.clone();
        tokio::spawn(async move { component(&runner, &edited).await })
    };
    let runs = world.cluster.api::<TrainingRun>();
    eventually(Duration::from_secs(60), "the step's run", || {
        let runs = runs.clone();
        async move { Ok(runs.get_opt("edited").await?.map(|_| ())) }
    })
    .await?;
    runs.patch(
        "edited",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"seed": 9}})),
    )
    .await?;
    let (ok, printed) = step.await??;
    assert!(!ok, "{printed:#}");
    assert_eq!(printed["error"]["type"], json!("TrainingRunFailed"));
    let text = printed["error"]["message"].as_str().unwrap_or_default();
    assert!(
        text.contains(&format!("TrainingRun {ns}/edited: its spec was changed")),
        "{text}"
    );
    assert_eq!(printed["uri"], json!(""));
    Ok(())
}
