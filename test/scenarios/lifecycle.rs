//! Runs on accelerator pools: pods from the spec, worker records as pods terminate, materials,
//! failures, bad reports, restarts, leader election, metrics.

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams};
use provenant::api::{Phase, ProvenanceState, Source, TrainingRun};
use provenant_testbed::cluster::{Cluster, ControllerProcess, eventually};
use provenant_testbed::kubelet::{KubeletSim, PodOutcome, Scenario, SimNode};
use serde_json::json;

use crate::support::*;

const A100: &str = "NVIDIA-A100-SXM4-80GB";

fn gpu_scenario(cluster: &Cluster) -> Scenario {
    Scenario::new().namespace(&cluster.namespace).nodes(2, |i| {
        SimNode::nvidia(format!("gpu-{i}"), A100, 8).instance_type("p4de.24xlarge")
    })
}

fn ok_outcome() -> PodOutcome {
    PodOutcome::succeed()
        .after(Duration::from_millis(300))
        .image_digest("trainer", IMAGE_DIGEST)
}

/// A controller with provenance disabled: these scenarios are about running and recording.
async fn start_controller(cluster: &Cluster, identity: &str) -> Result<ControllerProcess> {
    let config = controller_config(cluster, "no-provenance", PROVENANCE_DISABLED);
    let flag = format!("--config={}", config.display());
    let mut controller = ControllerProcess::start(binary(), cluster, identity, &[&flag])?;
    controller.wait_ready(Duration::from_secs(30)).await?;
    Ok(controller)
}

#[tokio::test]
async fn four_gpu_workers_are_scheduled_observed_and_recorded() -> Result<()> {
    init_logs();
    let cluster = Cluster::start().await?;
    let rank0_report = json!({
        "outputs": [{"uri": format!("{REPOSITORY}:v1@{MODEL_DIGEST}")}],
        "datasets": [{"name": "wiki", "digest": DATA_DIGEST}],
        "metrics": {"accuracy": 0.91, "loss": 0.25},
    })
    .to_string();
    let other_report = json!({"datasets": [{"name": "wiki", "digest": DATA_DIGEST}]}).to_string();
    let sim = KubeletSim::start(
        cluster.client.clone(),
        gpu_scenario(&cluster)
            .pod("bert-0", ok_outcome().message(rank0_report))
            .default_outcome(ok_outcome().message(other_report)),
    )
    .await?;
    let controller = start_controller(&cluster, "a").await?;

    create(
        &cluster,
        &run(
            "bert",
            json!({
                "replicas": 4,
                "accelerator": {"type": "nvidia-a100-80gb", "count": 2},
                "hyperparameters": {"lr": 0.001, "schedule": {"warmup": 100}},
                "datasets": [
                    {"name": "wiki", "uri": "gs://data/wiki"},
                    {"name": "books", "uri": "gs://data/books", "digest": DATA_DIGEST}
                ],
            }),
        ),
    )
    .await?;
    let done = wait_phase(&cluster, "bert", Phase::Succeeded).await?;

    // The pods: one per rank, on the A100 pool, two GPUs each, with the rendezvous environment.
    let pods = pods_of(&cluster, "bert").await?;
    assert_eq!(pods.len(), 4);
    for pod in &pods {
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(
            spec.node_selector.as_ref().unwrap()["nvidia.com/gpu.product"],
            A100
        );
        let c = &spec.containers[0];
        let limits = c.resources.as_ref().unwrap().limits.as_ref().unwrap();
        assert_eq!(limits["nvidia.com/gpu"].0, "2");
        assert_eq!(c.termination_message_policy.as_deref(), Some("File"));
        let env: std::collections::BTreeMap<_, _> = c
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| (e.name.as_str(), e.value.clone().unwrap_or_default()))
            .collect();
        let rank = pod.labels()["provenant.dev/rank"].clone();
        assert_eq!(env["RANK"], rank);
        assert_eq!(env["WORLD_SIZE"], "4");
        assert_eq!(env["MASTER_ADDR"], "bert-0.bert");
        assert_eq!(env["PROVENANT_SEED"], "42");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&env["PROVENANT_HYPERPARAMETERS"])?,
            json!({"lr": 0.001, "schedule": {"warmup": 100}})
        );
        assert_eq!(pod.owner_references()[0].uid, done.uid().unwrap());
    }

    // The status: four workers with node, accelerator facts and image digests.
    let status = done.status.clone().unwrap();
    assert_eq!(status.workers.len(), 4);
    for (rank, w) in status.workers.iter().enumerate() {
        assert_eq!(w.rank, rank as i32);
        assert_eq!(w.pod_name, format!("bert-{rank}"));
        assert!(
            sim.node_names().contains(w.node_name.as_ref().unwrap()),
            "{w:?}"
        );
        assert_eq!(
            (w.exit_code, w.reason.as_deref()),
            (Some(0), Some("Completed"))
        );
        assert_eq!(w.containers[0].digest.as_deref(), Some(IMAGE_DIGEST));
        let acc = w
            .accelerator
            .as_ref()
            .unwrap_or_else(|| panic!("no accelerator facts: {w:#?}"));
        assert_eq!(acc.product.as_deref(), Some(A100));
        assert_eq!(acc.count.as_deref(), Some("8"));
        assert_eq!(acc.allocated, Some(2));
        assert_eq!(acc.driver_version.as_deref(), Some("535.104.05"));
        assert_eq!(acc.instance_type.as_deref(), Some("p4de.24xlarge"));
        assert!(w.report_digest.is_some() && w.started_at.is_some() && w.finished_at.is_some());
    }
    assert_eq!(
        status.workers[0].report.as_ref().unwrap().metrics["accuracy"],
        0.91
    );
    let materials = status.materials.clone().unwrap();
    let wiki = materials
        .datasets
        .iter()
        .find(|d| d.name == "wiki")
        .unwrap();
    // Declared without a digest: the digest is the workers' word only.
    assert_eq!(
        (wiki.digest.as_deref(), wiki.sources.as_slice()),
        (Some(DATA_DIGEST), [Source::Reported].as_slice())
    );
    let books = materials
        .datasets
        .iter()
        .find(|d| d.name == "books")
        .unwrap();
    assert_eq!(books.sources, [Source::Declared]);
    assert_eq!(materials.images.len(), 1);
    assert_eq!(materials.images[0].digest, IMAGE_DIGEST);
    assert_eq!(status.outputs.len(), 1);
    assert_eq!(
        (
            status.outputs[0].repository.as_str(),
            status.outputs[0].digest.as_str()
        ),
        (REPOSITORY, MODEL_DIGEST)
    );
    assert_eq!(condition(&done, "Succeeded").unwrap().0, "True");
    assert_eq!(condition(&done, "MaterialsRecorded").unwrap().0, "True");
    assert_eq!(status.provenance.unwrap().state, ProvenanceState::Disabled);
    assert_eq!(status.observed_generation, done.metadata.generation);

    // With provenance disabled, the finalizer goes once the materials are recorded.
    let api = cluster.api::<TrainingRun>();
    eventually(TIMEOUT, "finalizer released", || {
        let api = api.clone();
        async move { Ok(api.get("bert").await?.finalizers().is_empty().then_some(())) }
    })
    .await?;

    // Events for the transitions.
    let events = eventually(TIMEOUT, "events", || {
        let api = cluster.api::<Event>();
        async move {
            let reasons: Vec<String> = api
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("bert"))
                .filter_map(|e| e.reason)
                .collect();
            Ok(reasons
                .contains(&"Succeeded".to_string())
                .then_some(reasons))
        }
    })
    .await?;
    for reason in ["Created", "WorkerFinished", "Succeeded"] {
        assert!(
            events.iter().any(|r| r == reason),
            "no {reason} event in {events:?}"
        );
    }

    // Metrics after the run.
    let text = controller.metrics().await?;
    assert!(
        metric(&text, "provenant_reconcile_duration_seconds_count").unwrap() > 0.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "provenant_workers_observed_total"),
        Some(4.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "provenant_trainingruns{phase=\"Succeeded\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "provenant_trainingruns{phase=\"Running\"}"),
        Some(0.0),
        "{text}"
    );
    // Every reason's series exists from the start; a healthy run panics no reconcile.
    assert_eq!(
        metric(&text, "provenant_reconcile_errors_total{reason=\"Panic\"}"),
        Some(0.0),
        "{text}"
    );

    // Every log line of a reconcile names the run.
    let log = controller.log_text();
    let recorded: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["message"] == "worker recorded")
        .collect();
    assert_eq!(recorded.len(), 4, "{log}");
    for line in recorded {
        assert_eq!(line["span"]["run"], "bert", "{line}");
        assert_eq!(
            line["span"]["namespace"],
            cluster.namespace.as_str(),
            "{line}"
        );
    }
    sim.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_failing_worker_fails_the_run_with_its_exit_code() -> Result<()> {
    init_logs();
    let cluster = Cluster::start().await?;
    let sim = KubeletSim::start(
        cluster.client.clone(),
        gpu_scenario(&cluster)
            .pod(
                "ft-1",
                PodOutcome::fail(3)
                    .after(Duration::from_millis(300))
                    .reason("Error"),
            )
            .default_outcome(PodOutcome::run_forever()),
    )
    .await?;
    let _controller = start_controller(&cluster, "a").await?;
    create(
        &cluster,
        &run(
            "ft",
            json!({"replicas": 2, "accelerator": {"type": "nvidia-a100-80gb", "count": 1}}),
        ),
    )
    .await?;
    let failed = wait_phase(&cluster, "ft", Phase::Failed).await?;
    let (status, reason, message) = condition(&failed, "Succeeded").unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "WorkerFailed")
    );
    assert!(
        message.contains("ft-1") && message.contains("exit code 3") && message.contains("Error"),
        "{message}"
    );
    let worker = &failed.status.as_ref().unwrap().workers[0];
    assert_eq!(
        (worker.pod_name.as_str(), worker.exit_code),
        ("ft-1", Some(3))
    );
    // The surviving worker is stopped: its accelerators are not held by a dead run.
    eventually(TIMEOUT, "ft-0 stopped", || {
        let api = cluster.api::<Pod>();
        async move {
            Ok(match api.get_opt("ft-0").await? {
                None => Some(()),
                Some(p) => p.metadata.deletion_timestamp.is_some().then_some(()),
            })
        }
    })
    .await?;
    sim.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn bad_reports_get_their_reasons_while_other_runs_complete() -> Result<()> {
    init_logs();
    let cluster = Cluster::start().await?;
    let other = "sha256:4444444444444444444444444444444444444444444444444444444444444444";
    // Each report is wrong in one way only; the condition's message must say which.
    let over_cap = {
        let metrics: serde_json::Map<String, serde_json::Value> = (0..40)
            .map(|i| (format!("metric-{i:03}-{}", "x".repeat(100)), json!(i)))
            .collect();
        json!({"metrics": metrics}).to_string()
    };
    assert!(over_cap.len() > 4096 && over_cap.len() < 8192);
    let cases = [
        (
            "not-json",
            "this is not json".to_string(),
            "InvalidWorkloadReport",
            "not valid JSON",
        ),
        (
            "over-cap",
            over_cap,
            "InvalidWorkloadReport",
            "over the 4096-byte cap",
        ),
        (
            "bad-digest",
            json!({"datasets": [{"name": "wiki", "digest": "md5:abc"}]}).to_string(),
            "InvalidWorkloadReport",
            "datasets[0].digest",
        ),
        (
            "outside",
            json!({"outputs": [{"uri": format!("evil.example.com/x@{MODEL_DIGEST}")}]}).to_string(),
            "OutputOutsideRepository",
            "outside spec.output.repository",
        ),
        (
            "contradicts",
            json!({"datasets": [{"name": "wiki", "digest": other}]}).to_string(),
            "DatasetDigestMismatch",
            "spec.datasets declares",
        ),
    ];
    let mut scenario = gpu_scenario(&cluster).default_outcome(ok_outcome());
    for (name, message, _, _) in &cases {
        scenario = scenario.pod(&format!("{name}-0"), ok_outcome().message(message.clone()));
    }
    // A crash that leaves its error text in the termination message: the worker's failure is
    // the run's reason, not the text that is not a report.
    let crash_text = "Traceback (most recent call last): RuntimeError: CUDA out of memory";
    scenario = scenario.pod(
        "crashed-0",
        PodOutcome::fail(1)
            .after(Duration::from_millis(300))
            .image_digest("trainer", IMAGE_DIGEST)
            .message(crash_text),
    );
    let sim = KubeletSim::start(cluster.client.clone(), scenario).await?;
    let _controller = start_controller(&cluster, "a").await?;
    for (name, _, _, _) in &cases {
        let spec =
            json!({"datasets": [{"name": "wiki", "uri": "gs://data/wiki", "digest": DATA_DIGEST}]});
        create(&cluster, &run(name, spec)).await?;
    }
    create(&cluster, &run("good", json!({}))).await?;
    create(&cluster, &run("crashed", json!({}))).await?;

    for (name, _, reason, hint) in &cases {
        let failed = wait_phase(&cluster, name, Phase::Failed).await?;
        let (_, got, message) = condition(&failed, "Succeeded").unwrap();
        assert_eq!(&got, reason, "{name}: {message}");
        assert!(
            message.contains(hint),
            "{name}: the message does not say what was wrong: {message}"
        );
        assert_eq!(
            condition(&failed, "MaterialsRecorded").unwrap().1,
            *reason,
            "{name}"
        );
        // What was observed stays recorded, even though the report was refused.
        assert_eq!(failed.status.unwrap().workers.len(), 1, "{name}");
    }
    let good = wait_phase(&cluster, "good", Phase::Succeeded).await?;
    assert_eq!(condition(&good, "MaterialsRecorded").unwrap().0, "True");

    let crashed = wait_phase(&cluster, "crashed", Phase::Failed).await?;
    let (_, reason, message) = condition(&crashed, "Succeeded").unwrap();
    assert_eq!(reason, "WorkerFailed", "{message}");
    assert!(message.contains("exit code 1"), "{message}");
    assert!(message.contains("not a report"), "{message}");
    let worker = &crashed.status.unwrap().workers[0];
    assert!(
        worker
            .report_error
            .as_deref()
            .is_some_and(|e| e.contains("not valid JSON")),
        "{worker:?}"
    );
    sim.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_restart_mid_run_duplicates_no_pod_and_loses_no_record() -> Result<()> {
    init_logs();
    let cluster = Cluster::start().await?;
    let sim = KubeletSim::start(
        cluster.client.clone(),
        gpu_scenario(&cluster)
            .pod("rr-0", ok_outcome())
            .default_outcome(ok_outcome().after(Duration::from_secs(4))),
    )
    .await?;
    let first = start_controller(&cluster, "first").await?;
    create(&cluster, &run("rr", json!({"replicas": 3}))).await?;
    let api = cluster.api::<TrainingRun>();
    eventually(TIMEOUT, "one worker recorded", || {
        let api = api.clone();
        async move {
            Ok((api
                .get("rr")
                .await?
                .status
                .unwrap_or_default()
                .workers
                .len()
                == 1)
                .then_some(()))
        }
    })
    .await?;
    first.kill()?; // a crash: no clean shutdown, the Lease is not released
    let _second = start_controller(&cluster, "second").await?;
    let done = wait_phase(&cluster, "rr", Phase::Succeeded).await?;
    let names: Vec<&str> = done
        .status
        .as_ref()
        .unwrap()
        .workers
        .iter()
        .map(|w| w.pod_name.as_str())
        .collect();
    assert_eq!(names, ["rr-0", "rr-1", "rr-2"]);
    assert_eq!(pods_of(&cluster, "rr").await?.len(), 3);
    if let Some(creates) = cluster.pod_creates()? {
        assert_eq!(creates, 3, "pods created exactly once each");
    }
    sim.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn only_the_leader_acts_and_a_standby_takes_over() -> Result<()> {
    init_logs();
    let cluster = Cluster::start().await?;
    let sim = KubeletSim::start(
        cluster.client.clone(),
        gpu_scenario(&cluster).default_outcome(ok_outcome()),
    )
    .await?;
    let leader = start_controller(&cluster, "leader").await?;
    let leases = cluster.controller_api::<Lease>();
    eventually(TIMEOUT, "the first instance holds the Lease", || {
        let leases = leases.clone();
        async move {
            let lease = leases.get_opt("provenant-controller").await?;
            let holder = lease.and_then(|l| l.spec).and_then(|s| s.holder_identity);
            Ok((holder.as_deref() == Some("leader")).then_some(()))
        }
    })
    .await?;
    let standby = start_controller(&cluster, "standby").await?;
    leads(&leader, 1.0).await?;
    assert_eq!(
        metric(&standby.metrics().await?, "provenant_leader"),
        Some(0.0)
    );
    create(&cluster, &run("one", json!({"replicas": 2}))).await?;
    wait_phase(&cluster, "one", Phase::Succeeded).await?;
    assert!(
        leader.log_text().contains("created worker pods"),
        "{}",
        leader.log_text()
    );
    let standby_log = standby.log_text();
    assert!(
        !standby_log.contains("created worker pods") && !standby_log.contains("became the leader"),
        "{standby_log}"
    );
    assert_eq!(
        metric(
            &standby.metrics().await?,
            "provenant_workers_observed_total"
        ),
        Some(0.0)
    );

    leader.kill()?;
    create(&cluster, &run("two", json!({"replicas": 2}))).await?;
    wait_phase(&cluster, "two", Phase::Succeeded).await?;
    assert!(standby.log_text().contains("became the leader"));
    leads(&standby, 1.0).await?;
    sim.shutdown().await?;
    Ok(())
}

/// Waits until the controller's `provenant_leader` gauge reads `value` (set as the Lease is
/// gained or lost, so it may trail the log by an instant).
async fn leads(controller: &ControllerProcess, value: f64) -> Result<()> {
    eventually(
        TIMEOUT,
        &format!("provenant_leader {value}"),
        || async move {
            Ok(
                (metric(&controller.metrics().await?, "provenant_leader") == Some(value))
                    .then_some(()),
            )
        },
    )
    .await
}

#[tokio::test]
async fn deleting_a_running_run_stops_its_workers() -> Result<()> {
    init_logs();
    let cluster = Cluster::start().await?;
    let sim = KubeletSim::start(
        cluster.client.clone(),
        gpu_scenario(&cluster).default_outcome(PodOutcome::run_forever()),
    )
    .await?;
    let _controller = start_controller(&cluster, "a").await?;
    create(&cluster, &run("del", json!({"replicas": 2}))).await?;
    wait_phase(&cluster, "del", Phase::Running).await?;
    cluster
        .api::<TrainingRun>()
        .delete("del", &DeleteParams::default())
        .await?;
    let api = cluster.api::<TrainingRun>();
    eventually(TIMEOUT, "the run is gone", || {
        let api = api.clone();
        async move { Ok(api.get_opt("del").await?.is_none().then_some(())) }
    })
    .await?;
    // The controller never waits for the pods to disappear; it asked for their deletion.
    eventually(TIMEOUT, "workers stopped", || {
        let cluster = &cluster;
        async move {
            let pods = pods_of(cluster, "del").await?;
            Ok(pods
                .iter()
                .all(|p| p.metadata.deletion_timestamp.is_some())
                .then_some(()))
        }
    })
    .await?;
    sim.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn deadline_and_unknown_accelerator_fail_with_reasons() -> Result<()> {
    init_logs();
    let cluster = Cluster::start().await?;
    let sim = KubeletSim::start(
        cluster.client.clone(),
        gpu_scenario(&cluster).default_outcome(PodOutcome::run_forever()),
    )
    .await?;
    let _controller = start_controller(&cluster, "a").await?;
    create(&cluster, &run("slow", json!({"activeDeadlineSeconds": 2}))).await?;
    create(
        &cluster,
        &run(
            "exotic",
            json!({"accelerator": {"type": "nvidia-b300", "count": 1}}),
        ),
    )
    .await?;
    let slow = wait_phase(&cluster, "slow", Phase::Failed).await?;
    assert_eq!(condition(&slow, "Succeeded").unwrap().1, "DeadlineExceeded");
    let exotic = wait_phase(&cluster, "exotic", Phase::Failed).await?;
    let (_, reason, message) = condition(&exotic, "Succeeded").unwrap();
    assert_eq!(reason, "UnknownAccelerator");
    assert!(
        message.contains("nvidia-b300") && message.contains("nvidia-a100-80gb"),
        "{message}"
    );
    assert!(pods_of(&cluster, "exotic").await?.is_empty());
    // A TPU profile that selects a slice topology, asked without one.
    create(
        &cluster,
        &run(
            "no-topology",
            json!({"accelerator": {"type": "tpu-v5e", "count": 4}}),
        ),
    )
    .await?;
    let no_topology = wait_phase(&cluster, "no-topology", Phase::Failed).await?;
    let (_, reason, message) = condition(&no_topology, "Succeeded").unwrap();
    assert_eq!(reason, "InvalidAcceleratorTopology");
    assert!(
        message.starts_with("spec.accelerator.topology"),
        "{message}"
    );
    // A run in the controller's namespace could mount the signing key: refused, no pod created.
    // (A second instance watches that namespace; the first one only watches the test's.)
    let ns_flag = format!("--namespace={}", cluster.controller_namespace);
    let mut watcher_of_ctl_ns = ControllerProcess::start(
        binary(),
        &cluster,
        "ctl-ns",
        &[&ns_flag, "--leader-elect=false"],
    )?;
    watcher_of_ctl_ns
        .wait_ready(Duration::from_secs(30))
        .await?;
    let sneaky = cluster.controller_api::<TrainingRun>();
    sneaky
        .create(&kube::api::PostParams::default(), &run("sneaky", json!({"volumes": [{"name": "key", "secret": {"secretName": "provenant-signing-key"}}], "volumeMounts": [{"name": "key", "mountPath": "/key"}]})))
        .await?;
    let refused = eventually(
        TIMEOUT,
        "the run in the controller namespace refused",
        || {
            let sneaky = sneaky.clone();
            async move {
                let run = sneaky.get("sneaky").await?;
                Ok(
                    (run.status.as_ref().and_then(|s| s.phase) == Some(Phase::Failed))
                        .then_some(run),
                )
            }
        },
    )
    .await?;
    assert_eq!(
        condition(&refused, "Succeeded").unwrap().1,
        "ForbiddenNamespace"
    );
    let pods = cluster
        .controller_api::<Pod>()
        .list(&ListParams::default().labels("provenant.dev/run=sneaky"))
        .await?;
    assert!(
        pods.items.is_empty(),
        "a pod was created in the controller namespace"
    );
    sim.shutdown().await?;
    Ok(())
}

/// Faults only the double makes on demand, mid-run: every watch dropped at once, and the
/// resourceVersion the controller would resume from expired (410 Gone). Its watchers must list
/// again and carry on: the run in flight and a run created afterwards both finish.
#[tokio::test]
async fn dropped_watches_and_an_expired_resource_version_lose_no_run() -> Result<()> {
    init_logs();
    let cluster = Cluster::start_double().await?;
    let server = cluster.server.as_ref().context("the double")?;
    let sim = KubeletSim::start(
        cluster.client.clone(),
        gpu_scenario(&cluster).default_outcome(ok_outcome().after(Duration::from_secs(2))),
    )
    .await?;
    let _controller = start_controller(&cluster, "a").await?;
    create(&cluster, &run("before", json!({"replicas": 2}))).await?;
    wait_phase(&cluster, "before", Phase::Running).await?;
    let runs_path = format!("/namespaces/{}/trainingruns", cluster.namespace);
    let lists = || {
        server
            .requests()
            .iter()
            .filter(|r| {
                r.method == "GET" && r.path.ends_with(&runs_path) && !r.query.contains("watch")
            })
            .count()
    };
    let lists_before = lists();

    server.compact();
    server.close_watches();
    create(&cluster, &run("after", json!({"replicas": 1}))).await?;
    for name in ["before", "after"] {
        let done = wait_phase(&cluster, name, Phase::Succeeded).await?;
        let workers = done.status.unwrap_or_default().workers.len();
        assert_eq!(
            workers, done.spec.replicas as usize,
            "{name}: every worker recorded"
        );
    }
    assert!(
        lists() > lists_before,
        "the controller listed TrainingRuns again after the 410"
    );
    sim.shutdown().await?;
    Ok(())
}

/// A pod of the run's worker name that is not the run's: never adopted, reported as
/// `PodConflict` (condition and Warning event) until it goes; then the run proceeds.
#[tokio::test]
async fn a_foreign_pod_with_a_worker_name_blocks_the_run_until_it_goes() -> Result<()> {
    init_logs();
    let cluster = Cluster::start().await?;
    let foreign: Pod = serde_json::from_value(json!({
        "metadata": {"name": "taken-0", "labels": {"app": "someone-else"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}], "nodeSelector": {"nowhere": "x"}},
    }))?;
    cluster
        .api::<Pod>()
        .create(&kube::api::PostParams::default(), &foreign)
        .await?;
    let sim = KubeletSim::start(
        cluster.client.clone(),
        gpu_scenario(&cluster).default_outcome(ok_outcome()),
    )
    .await?;
    let _controller = start_controller(&cluster, "a").await?;
    create(&cluster, &run("taken", json!({"replicas": 1}))).await?;
    let api = cluster.api::<TrainingRun>();
    let blocked = eventually(TIMEOUT, "PodConflict", || {
        let api = api.clone();
        async move {
            Ok(condition(&api.get("taken").await?, "Succeeded").filter(|c| c.1 == "PodConflict"))
        }
    })
    .await?;
    assert_eq!(blocked.0, "Unknown");
    assert!(blocked.2.contains("taken-0"), "{}", blocked.2);
    warning_event(&cluster, "PodConflict", "").await?;
    // The foreign pod is left alone: same UID, still not owned.
    let still = cluster.api::<Pod>().get("taken-0").await?;
    assert!(
        still
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );
    cluster
        .api::<Pod>()
        .delete("taken-0", &DeleteParams::default().grace_period(0))
        .await?;
    wait_phase(&cluster, "taken", Phase::Succeeded).await?;
    sim.shutdown().await?;
    Ok(())
}
