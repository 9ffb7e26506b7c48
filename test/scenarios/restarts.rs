//! Restarts (`spec.failurePolicy`) and suspension (`spec.suspend`) on the control plane, with the
//! kubelet simulator preempting a spot worker: every attempt is in the status and in the signed
//! statement's byproducts, and the subject is the final attempt's model.

use std::io::Read;
use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use provenant::api::{Phase, ProvenanceState, TrainingRun};
use provenant_testbed::cluster::{Cluster, ControllerProcess, eventually};
use provenant_testbed::kubelet::{KubeletSim, PodOutcome, Scenario, SimNode};
use serde_json::{Value, json};

use crate::provenance::{World, pushing_model};
use crate::support::*;

/// Two spot GPU nodes whose workers push a model tagged with their pod's name (rank 0) and
/// report it; `outcome` may replace a pod's outcome (by its name).
async fn spot_kubelet(
    world: &World,
    special: impl Fn(&str) -> Option<PodOutcome> + Send + Sync + 'static,
) -> Result<KubeletSim> {
    let registry = world.registry.clone();
    let repository = world.repository();
    let scenario = Scenario::new()
        .namespace(&world.cluster.namespace)
        .nodes(2, |i| {
            SimNode::nvidia(format!("spot-{i}"), "NVIDIA-H100-80GB-HBM3", 8)
                .label("cloud.google.com/gke-spot", "true")
        })
        .outcome_fn(move |pod| {
            let name = pod.name_any();
            if let Some(outcome) = special(&name) {
                return outcome.image_digest("trainer", IMAGE_DIGEST);
            }
            let outcome = PodOutcome::succeed()
                .after(Duration::from_millis(150))
                .image_digest("trainer", IMAGE_DIGEST);
            if pod
                .labels()
                .get("provenant.dev/rank")
                .is_none_or(|r| r != "0")
            {
                return outcome;
            }
            pushing_model(outcome, &registry, &repository, &name)
        });
    KubeletSim::start(world.cluster.client.clone(), scenario).await
}

fn gpu_run(world: &World, name: &str, extra: Value) -> TrainingRun {
    let mut spec = json!({
        "replicas": 2,
        "accelerator": {"type": "nvidia-h100-80gb", "count": 4},
        "output": {"repository": world.repository()},
    });
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        spec[k] = v;
    }
    run(name, spec)
}

/// The statement the controller signed, as kept in its record ConfigMap.
async fn signed_statement(world: &World, run: &TrainingRun) -> Result<Value> {
    let p = run.status.as_ref().and_then(|s| s.provenance.clone());
    let name = p.and_then(|p| p.envelope_config_map).context("no record")?;
    let cm = world
        .cluster
        .controller_api::<ConfigMap>()
        .get(&name)
        .await?;
    let gz = &cm.binary_data.context("no binary data")?["envelope.json.gz"];
    let mut envelope = Vec::new();
    flate2::read::GzDecoder::new(gz.0.as_slice()).read_to_end(&mut envelope)?;
    let envelope: Value = serde_json::from_slice(&envelope)?;
    let payload = base64::engine::general_purpose::STANDARD
        .decode(envelope["payload"].as_str().context("no payload")?)?;
    Ok(serde_json::from_slice(&payload)?)
}

async fn patch_spec(cluster: &Cluster, name: &str, spec: Value) -> Result<()> {
    cluster
        .api::<TrainingRun>()
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": spec})),
        )
        .await?;
    Ok(())
}

/// Waits until `check` holds of the run.
async fn wait_run(
    cluster: &Cluster,
    name: &str,
    what: &str,
    check: impl Fn(&TrainingRun) -> bool,
) -> Result<TrainingRun> {
    let api = cluster.api::<TrainingRun>();
    let check = &check;
    eventually(TIMEOUT, what, || {
        let api = api.clone();
        async move {
            let run = api.get(name).await?;
            Ok(check(&run).then_some(run))
        }
    })
    .await
}

#[tokio::test]
async fn restarts_a_preempted_spot_run_and_signs_the_final_attempt() -> Result<()> {
    let world = World::start(true).await?;
    let controller = world.controller("restarts").await?;
    // Worker 1 of attempt 0 is preempted (its spot VM reclaimed) after rank 0 already finished
    // and reported a model: that model must never become the subject.
    let sim = spot_kubelet(&world, |name| {
        (name == "spot-train-1").then(|| PodOutcome::preempted().after(Duration::from_millis(800)))
    })
    .await?;
    let policy = json!({"failurePolicy": {"maxRestarts": 2, "nonRetriableExitCodes": [42]}});
    create(&world.cluster, &gpu_run(&world, "spot-train", policy)).await?;
    let run = world
        .wait_provenance("spot-train", ProvenanceState::Attached)
        .await?;
    let status = run.status.clone().unwrap_or_default();
    assert_eq!(status.phase, Some(Phase::Succeeded));
    let (_, _, message) = condition(&run, "Succeeded").context("Succeeded")?;
    assert_eq!(message, "all 2 workers of attempt 1 succeeded");

    // Two attempts: the first ended by the eviction, the second succeeded.
    let attempts = &status.attempts;
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0].reason.as_deref(), Some("WorkerEvicted"));
    let why = attempts[0].message.as_deref().unwrap_or_default();
    assert!(why.contains("worker spot-train-1 (rank 1) failed"), "{why}");
    assert!(why.contains("reason Terminated"), "{why}");
    assert_eq!(attempts[1].reason.as_deref(), Some("Succeeded"));
    assert_eq!(attempts[1].pods, vec!["spot-train-0-a1", "spot-train-1-a1"]);
    // Never two attempts at once: attempt 1 started after attempt 0's workers had all ended.
    let attempt1 = attempts[1].start_time.clone().context("start")?.0;
    for w in status.workers.iter().filter(|w| w.attempt == 0) {
        let ended = w.finished_at.clone().context("finishedAt")?.0;
        assert!(
            ended <= attempt1,
            "{} ended at {ended}, attempt 1 began {attempt1}",
            w.pod_name
        );
    }
    let names: Vec<(&str, i32)> = status
        .workers
        .iter()
        .map(|w| (w.pod_name.as_str(), w.attempt))
        .collect();
    assert_eq!(
        names,
        vec![
            ("spot-train-0", 0),
            ("spot-train-1", 0),
            ("spot-train-0-a1", 1),
            ("spot-train-1-a1", 1)
        ]
    );
    // The restart was told, naming the worker and the attempt.
    let note = warning_event(&world.cluster, "Restarting", "spot-train-1").await?;
    assert!(note.contains("as attempt 1 (restart 1 of 2)"), "{note}");
    // Every attempt kept its rendezvous names (hostname/subdomain).
    let pods = pods_of(&world.cluster, "spot-train").await?;
    let a1 = pods
        .iter()
        .find(|p| p.name_any() == "spot-train-0-a1")
        .context("attempt 1's rank 0")?;
    let spec = a1.spec.as_ref().context("spec")?;
    assert_eq!(spec.hostname.as_deref(), Some("spot-train-0"));
    assert_eq!(spec.subdomain.as_deref(), Some("spot-train"));

    // The signed statement: every attempt's workers in byproducts, attempt 1's model as subject.
    let statement = signed_statement(&world, &run).await?;
    let byproducts = statement["predicate"]["runDetails"]["byproducts"]
        .as_array()
        .context("byproducts")?;
    let listed: Vec<(&str, i64)> = byproducts
        .iter()
        .map(|b| {
            let observed = &b["annotations"]["observed"];
            (
                b["name"].as_str().unwrap_or_default(),
                observed["attempt"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            ("worker/spot-train-0", 0),
            ("worker/spot-train-1", 0),
            ("worker/spot-train-0-a1", 1),
            ("worker/spot-train-1-a1", 1)
        ]
    );
    let preempted = &byproducts[1]["annotations"]["observed"];
    assert_eq!(preempted["reason"], "Terminated");
    assert_eq!(preempted["exitCode"], 137);
    assert!(
        preempted["node"]
            .as_str()
            .is_some_and(|n| n.contains("spot-")),
        "{preempted}"
    );
    let first_model = status.workers[0]
        .report
        .as_ref()
        .and_then(|r| r.outputs.first())
        .context("attempt 0's rank 0 reported a model")?;
    let subject = &statement["subject"];
    assert_eq!(subject.as_array().map(Vec::len), Some(1), "{subject}");
    let digest = format!(
        "sha256:{}",
        subject[0]["digest"]["sha256"].as_str().unwrap_or_default()
    );
    assert_eq!(digest, World::model_digest(&run));
    assert!(
        !first_model.ends_with(&digest),
        "attempt 0's model {first_model} became the subject"
    );
    let final_model = status.workers[2]
        .report
        .as_ref()
        .and_then(|r| r.outputs.first());
    assert!(
        final_model.is_some_and(|m| m.ends_with(&digest)),
        "{final_model:?}"
    );
    let internal = &statement["predicate"]["buildDefinition"]["internalParameters"];
    assert_eq!(internal["attempts"][0]["reason"], "WorkerEvicted");
    assert_eq!(internal["attempts"][1]["reason"], "Succeeded");
    let external = &statement["predicate"]["buildDefinition"]["externalParameters"];
    assert_eq!(
        external["failurePolicy"],
        json!({"maxRestarts": 2, "nonRetriableExitCodes": [42]})
    );

    sim.shutdown().await?;
    drop(controller);
    Ok(())
}

async fn plain_controller(cluster: &Cluster) -> Result<ControllerProcess> {
    let config = controller_config(cluster, "restarts", PROVENANCE_DISABLED);
    let flag = format!("--config={}", config.display());
    let mut controller = ControllerProcess::start(binary(), cluster, "restarts", &[&flag])?;
    controller.wait_ready(Duration::from_secs(30)).await?;
    Ok(controller)
}

#[tokio::test]
async fn restarts_stop_at_a_non_retriable_code_and_after_max_restarts() -> Result<()> {
    init_logs();
    let cluster = Cluster::start().await?;
    let controller = plain_controller(&cluster).await?;
    let scenario = Scenario::new()
        .namespace(&cluster.namespace)
        .nodes(1, |i| SimNode::new(format!("cpu-{i}")))
        .outcome_fn(|pod| {
            let name = pod.name_any();
            if name.starts_with("fatal-") {
                PodOutcome::fail(42)
            } else if name == "flaky-0" {
                // Still running when its attempt ends: stopped before the next attempt starts.
                PodOutcome::run_forever()
            } else if name.starts_with("flaky-") {
                PodOutcome::fail(3)
            } else {
                PodOutcome::succeed()
            }
        });
    let sim = KubeletSim::start(cluster.client.clone(), scenario).await?;

    let policy = |max: i32| json!({"replicas": 2, "failurePolicy": {"maxRestarts": max, "nonRetriableExitCodes": [42]}});
    create(&cluster, &run("fatal", policy(3))).await?;
    create(&cluster, &run("flaky", policy(1))).await?;

    // Exit code 42 is non-retriable: failed at once, in its first attempt.
    let fatal = wait_phase(&cluster, "fatal", Phase::Failed).await?;
    let (_, reason, message) = condition(&fatal, "Succeeded").context("Succeeded")?;
    assert_eq!(reason, "WorkerFailed");
    assert!(
        message.contains("exit code 42 is non-retriable"),
        "{message}"
    );
    let attempts = &fatal.status.as_ref().context("status")?.attempts;
    assert_eq!(attempts.len(), 1, "{attempts:?}");

    // Exit code 3 every time: one restart, then the run fails naming its attempts.
    let flaky = wait_phase(&cluster, "flaky", Phase::Failed).await?;
    let (_, reason, message) = condition(&flaky, "Succeeded").context("Succeeded")?;
    assert_eq!(reason, "WorkerFailed");
    assert!(
        message.contains("worker flaky-") && message.contains("-a1 (rank"),
        "{message}"
    );
    assert!(
        message.contains("no restart left: 2 attempts, spec.failurePolicy.maxRestarts is 1"),
        "{message}"
    );
    let status = flaky.status.clone().context("status")?;
    let reasons: Vec<Option<&str>> = status
        .attempts
        .iter()
        .map(|a| a.reason.as_deref())
        .collect();
    assert_eq!(reasons, vec![Some("WorkerFailed"), Some("WorkerFailed")]);
    assert!(status.workers.iter().any(|w| w.attempt == 1));
    // The worker still running when attempt 0 ended was stopped, and is recorded as such (as
    // last seen), and attempt 0 ended for the worker that failed, not for the one stopped.
    let stopped = status
        .workers
        .iter()
        .find(|w| w.pod_name == "flaky-0")
        .context("flaky-0")?;
    assert_eq!(
        (stopped.reason.as_deref(), stopped.attempt),
        (Some("Stopped"), 0)
    );
    let why = status.attempts[0].message.as_deref().unwrap_or_default();
    assert!(
        why.contains("worker flaky-1 (rank 1) failed: exit code 3"),
        "{why}"
    );
    let ended = status.attempts[0].end_time.clone().context("end")?.0;
    let next = status.attempts[1].start_time.clone().context("start")?.0;
    assert!(
        ended <= next,
        "attempt 1 began at {next}, before attempt 0 ended at {ended}"
    );
    warning_event(&cluster, "Restarting", "as attempt 1 (restart 1 of 1)").await?;

    sim.shutdown().await?;
    drop(controller);
    Ok(())
}

#[tokio::test]
async fn a_suspended_run_has_no_pods_and_resumes_as_a_new_attempt() -> Result<()> {
    let world = World::start(true).await?;
    let controller = world.controller("suspend").await?;
    // Attempt 0's workers run until stopped; attempt 1's finish.
    let sim = spot_kubelet(&world, |name| {
        (!name.ends_with("-a1")).then(PodOutcome::run_forever)
    })
    .await?;
    let cluster = &world.cluster;
    let name = "queued";
    create(cluster, &gpu_run(&world, name, json!({"suspend": true}))).await?;

    // Created suspended: Pending, said so, no pod and no startTime.
    let run = wait_run(cluster, name, "a Suspended condition", |r| {
        condition(r, "Suspended").is_some_and(|c| c.0 == "True")
    })
    .await?;
    let status = run.status.clone().context("status")?;
    assert_eq!(status.phase, Some(Phase::Pending));
    assert_eq!(status.start_time, None);
    assert!(pods_of(cluster, name).await?.is_empty());
    // Not started: the rest of the spec may still change (Kueue changes node selectors).
    patch_spec(cluster, name, json!({"seed": 7})).await?;

    // Resumed: it starts.
    patch_spec(cluster, name, json!({"suspend": false})).await?;
    let run = wait_phase(cluster, name, Phase::Running).await?;
    assert!(run.status.as_ref().is_some_and(|s| s.start_time.is_some()));

    // Suspended mid-run: the workers are stopped, the attempt ends `Suspended`.
    patch_spec(cluster, name, json!({"suspend": true})).await?;
    let run = wait_run(cluster, name, "attempt 0 to end Suspended", |r| {
        r.status.as_ref().is_some_and(|s| {
            s.attempts.first().and_then(|a| a.reason.as_deref()) == Some("Suspended")
        })
    })
    .await?;
    assert_eq!(
        run.status.as_ref().and_then(|s| s.phase),
        Some(Phase::Pending)
    );
    eventually(TIMEOUT, "the suspended run's pods to be gone", || async {
        Ok(pods_of(cluster, name).await?.is_empty().then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        pods_of(cluster, name).await?.is_empty(),
        "a pod came back while suspended"
    );

    // Resumed again: a new attempt, which succeeds and is signed.
    patch_spec(cluster, name, json!({"suspend": false})).await?;
    let run = world
        .wait_provenance(name, ProvenanceState::Attached)
        .await?;
    let status = run.status.clone().context("status")?;
    let reasons: Vec<Option<&str>> = status
        .attempts
        .iter()
        .map(|a| a.reason.as_deref())
        .collect();
    assert_eq!(reasons, vec![Some("Suspended"), Some("Succeeded")]);
    // Both suspensions recorded, ended: before the start, and mid-run.
    assert_eq!(status.suspensions.len(), 2, "{:?}", status.suspensions);
    assert!(status.suspensions.iter().all(|s| s.end_time.is_some()));
    let (_, reason, _) = condition(&run, "Suspended").context("Suspended")?;
    assert_eq!(reason, "Resumed");
    // A suspension is not a restart: no Restarting event, and the provenance tells the story.
    let statement = signed_statement(&world, &run).await?;
    let internal = &statement["predicate"]["buildDefinition"]["internalParameters"];
    assert_eq!(
        internal["suspensions"].as_array().map(Vec::len),
        Some(2),
        "{internal}"
    );
    assert!(
        internal["suspensions"][1]["endTime"].is_string(),
        "{internal}"
    );
    assert_eq!(internal["attempts"][0]["reason"], "Suspended");
    let byproducts = statement["predicate"]["runDetails"]["byproducts"]
        .as_array()
        .context("byproducts")?;
    let stopped = byproducts
        .iter()
        .find(|b| b["name"] == "worker/queued-0")
        .context("attempt 0's stopped worker")?;
    assert_eq!(stopped["annotations"]["observed"]["reason"], "Stopped");

    sim.shutdown().await?;
    drop(controller);
    Ok(())
}
